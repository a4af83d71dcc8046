"""Turn records into token ids with completion-only labels, the form SFTTrainer trains on.

The prompt and the response are tokenized separately and concatenated. Tokenizing them as one
string would let BPE merge across the boundary, so the prompt tokens seen in training could
differ from those the model is given at inference; `encode_prompts` is the one encoder both use.
"""

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sft.data.template import PromptTemplate

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # positions the loss skips: prompt tokens and padding
# Part of every tokenized-cache key: bump it whenever `tokenize_batch` changes the ids or labels it produces,
# so that no run trains on token ids an older version computed.
TOKENIZE_VERSION = 1
TOKENIZED_DIR = "tokenized"  # under sft's cache directory: one folder per key
TOKENIZED_FILE = "tokens.arrow"
LENGTH_BATCH = 2048  # records tokenized at once when only their lengths are wanted


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids, with the tokenizer's own special tokens (BOS for Llama-style models)."""
    return tokenizer(list(prompts), add_special_tokens=True)["input_ids"]


def encode_completions(tokenizer: Any, completions: Sequence[str]) -> list[list[int]]:
    """Response token ids closed by EOS, which is learned so that the model stops."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set one so the model can learn to stop")
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    return [list(row) + [tokenizer.eos_token_id] for row in ids]


def tokenize_batch(batch: dict[str, list[str]], tokenizer: Any, template: PromptTemplate) -> dict[str, list[list[int]]]:
    """`datasets.map(batched=True)` function: records in, `input_ids` and `labels` out."""
    prompts = [template.render(ins, inp or "") for ins, inp in zip(batch["instruction"], batch["input"])]
    prompt_ids = encode_prompts(tokenizer, prompts)
    completion_ids = encode_completions(tokenizer, batch["output"])
    input_ids, labels = [], []
    for prompt, completion in zip(prompt_ids, completion_ids):
        input_ids.append(list(prompt) + completion)
        labels.append([IGNORE_INDEX] * len(prompt) + completion)
    return {"input_ids": input_ids, "labels": labels}


def tokenize_dataset(dataset: Any, tokenizer: Any, template: PromptTemplate | None = None) -> Any:
    """Tokenize a `datasets.Dataset` of records (cached between runs only when it is backed by a file;
    `tokenize_records` keeps its own cache)."""
    template = template or PromptTemplate()
    return dataset.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "template": template},
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )


def record_token_lengths(records: Sequence[dict[str, str]], tokenizer: Any, template: PromptTemplate) -> list[int]:
    """Prompt + response + EOS length of each record, as training will see it.

    Records are tokenized LENGTH_BATCH at a time: the tokenizer's encodings of a whole Alpaca-sized data set at
    once (ids, offsets, token strings) would take most of a gigabyte, growing with the record count.
    """
    lengths: list[int] = []
    for start in range(0, len(records), LENGTH_BATCH):
        chunk = records[start : start + LENGTH_BATCH]
        batch = {key: [r.get(key, "") or "" for r in chunk] for key in ("instruction", "input", "output")}
        lengths += [len(ids) for ids in tokenize_batch(batch, tokenizer, template)["input_ids"]]
    return lengths


# The tokenized cache ------------------------------------------------------------------------------------
#
# `datasets` caches a `map` by the fingerprint of its input, but only for a data set read from Arrow files on
# disk: `Dataset.from_list` / `from_dict` build an in-memory table with no cache files, and `map` on such a
# data set writes no cache file (`cache_file_name` stays None in `Dataset.map`), so every run tokenized every
# record again. Here the cache file is named by what the ids depend on: the records' text, the tokenizer and
# the prompt template, so a second run on the same data reads the ids back (memory-mapped) instead.


def tokenize_records(records: Sequence[dict[str, Any]], tokenizer: Any, template: PromptTemplate) -> Any:
    """A `datasets.Dataset` of `input_ids` and `labels`, one row per record in order, read from sft's cache
    (`<cache>/tokenized/<key>/tokens.arrow`) when the same records were tokenized the same way before, else
    tokenized through `datasets.map` into that file. Without a usable cache (no key for this tokenizer, a
    read-only cache directory) the records are tokenized in memory."""
    import datasets

    key = tokenized_cache_key(records, tokenizer, template)
    path = tokenized_cache_path(key) if key else None
    if path is not None and path.is_file():
        try:
            dataset = datasets.Dataset.from_file(str(path))
            if len(dataset) == len(records):
                logger.info("Token ids of %d records read from the cache (%s)", len(records), path.parent)
                return dataset
        except Exception as error:  # a damaged file: tokenize again and replace it
            logger.info("Tokenizing again: the cached token ids at %s are unreadable (%s)", path, error)
        path.unlink(missing_ok=True)
    columns = datasets.Dataset.from_dict(
        {name: [record.get(name) or "" for record in records] for name in ("instruction", "input", "output")}
    )
    # int32 ids halve the file; rows still come out as Python ints, so the collators build int64 tensors.
    features = datasets.Features({name: datasets.Sequence(datasets.Value("int32")) for name in ("input_ids", "labels")})
    options: dict[str, Any] = {}
    if path is not None:  # written to a temporary file beside it and moved into place by `datasets`
        options = {"cache_file_name": str(path), "new_fingerprint": key, "load_from_cache_file": True}
    dataset = columns.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "template": template},
        remove_columns=columns.column_names,
        features=features,
        desc="Tokenizing",
        **options,
    )
    if path is not None:
        logger.info("Tokenized %d records (cached in %s)", len(records), path.parent)
    return dataset


def token_lengths(dataset: Any) -> list[int]:
    """The length of every row's `input_ids`, read from the Arrow column without building Python lists."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.data.column("input_ids")).to_pylist()


def tokenized_cache_key(records: Sequence[dict[str, Any]], tokenizer: Any, template: PromptTemplate) -> str | None:
    """sha256 of what the token ids depend on, or None where the tokenizer cannot be fingerprinted."""
    identity = tokenizer_fingerprint(tokenizer)
    if identity is None:
        return None
    digest = hashlib.sha256()
    header = {"version": TOKENIZE_VERSION, "tokenizer": identity, "template": asdict(template)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    # One C-encoder call over all records: much faster than a json.dumps per record.
    rows = [[record.get(name) or "" for name in ("instruction", "input", "output")] for record in records]
    digest.update(json.dumps(rows, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A digest of everything about `tokenizer` that changes ids: its class, its `tokenizers` definition
    (vocabulary, merges, normaliser, pre-tokenizer, the post-processor that adds BOS) and its EOS."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = None
    if backend is not None:
        try:
            definition = backend.to_str()
        except Exception:  # a tokenizer `tokenizers` cannot serialise
            definition = None
    if definition is None:
        try:
            from datasets.fingerprint import Hasher

            definition = Hasher.hash(tokenizer)
        except Exception:  # not picklable either: no cache for it
            return None
    digest = hashlib.sha256(definition.encode("utf-8", "surrogatepass"))
    digest.update(f"{type(tokenizer).__name__}|{tokenizer.eos_token_id}".encode())
    return digest.hexdigest()


def tokenized_cache_path(key: str) -> Path | None:
    from sft.paths import cache_dir

    try:
        folder = cache_dir() / TOKENIZED_DIR / key
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.info("Not caching token ids: %s", error)
        return None
    return folder / TOKENIZED_FILE


class TokenizedRecords:
    """The token ids of one data set, computed once: as `token_lengths` for validation's length check, then
    again for training without tokenizing a second time."""

    def __init__(self, tokenizer: Any, template: PromptTemplate):
        self.tokenizer, self.template = tokenizer, template
        self.dataset: Any = None

    def __call__(self, records: list[dict[str, Any]]) -> list[int]:
        self.dataset = tokenize_records(records, self.tokenizer, self.template)
        return token_lengths(self.dataset)

    def of(self, records: Sequence[dict[str, Any]]) -> Any:
        """The token ids of `records` (the same records the length check saw, when it ran)."""
        if self.dataset is None or len(self.dataset) != len(records):
            self.dataset = tokenize_records(records, self.tokenizer, self.template)
        return self.dataset
