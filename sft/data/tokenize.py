"""Turn records into token ids with completion-only labels, the form SFTTrainer trains on.

The prompt and the response are tokenized separately and concatenated. Tokenizing them as one
string would let BPE merge across the boundary, so the prompt tokens seen in training could
differ from those the model is given at inference; `encode_prompts` is the one encoder both use.
"""

from collections.abc import Sequence
from typing import Any

from sft.data.template import PromptTemplate

IGNORE_INDEX = -100  # positions the loss skips: prompt tokens and padding


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
    """Tokenize a `datasets.Dataset` of records; `datasets` caches the result between runs."""
    template = template or PromptTemplate()
    return dataset.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "template": template},
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )


def record_token_lengths(records: Sequence[dict[str, str]], tokenizer: Any, template: PromptTemplate) -> list[int]:
    """Prompt + response + EOS length of each record, as training will see it."""
    batch = {key: [r.get(key, "") or "" for r in records] for key in ("instruction", "input", "output")}
    if not records:
        return []
    return [len(ids) for ids in tokenize_batch(batch, tokenizer, template)["input_ids"]]
