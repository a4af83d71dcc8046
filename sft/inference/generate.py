"""Responses from a causal LM for Alpaca prompts: batched, left-padded, greedy unless asked to sample.

Prompts are encoded with `encode_prompts`, the encoder training uses, so the model sees at
inference exactly the prompt tokens it was trained on. `Generator` holds what every way of generating
shares (prompt ids, EOS ids, the room left in the context, cutting a response out of generated ids):
batched generation here and streamed chat both use it.

Static batches stay: Transformers' continuous batching (`model.generate_batch`, paged attention) gave the same
greedy responses on the seed's 110 test prompts but took 2.6x as long on a CPU (bench/, `generate_vs_static`).
"""

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.settings import GenerationSettings

# tqdm turns a rate below 1/s into seconds per item; responses per second reads better on a CPU.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclass
class GenerationResult:
    text: str  # the response only: no prompt, no template markers, no surrounding whitespace
    new_tokens: int  # tokens generated up to EOS, a following header of the template, or the limit
    ended_at_eos: bool  # the model closed the response with EOS, within max_new_tokens


def template_headers(template: PromptTemplate) -> tuple[str, ...]:
    """The headers training renders at the start of a line: where a prompt block begins."""
    headers = (template.instruction_header, template.input_header, template.response_header)
    return tuple(header for header in headers if header)


@functools.lru_cache(maxsize=32)
def header_line(template: PromptTemplate) -> re.Pattern[str]:
    """One of the template's own headers at the start of a line. A model that never learned to stop tends
    to go on with the next `### Instruction:` block; a Markdown `### Step 1` heading is response."""
    headers = sorted(template_headers(template), key=len, reverse=True)
    return re.compile("^(?:" + "|".join(map(re.escape, headers)) + ")" if headers else "(?!)", re.MULTILINE)


def without_echo(text: str, template: PromptTemplate) -> str:
    """Continuation `text` without leading whitespace and without an echoed response header."""
    return text.lstrip().removeprefix(template.response_header).lstrip()


def extract_response(text: str, template: PromptTemplate | None = None) -> str:
    """The response in decoded continuation `text`: an echoed response header and anything from a
    following header of the template on are dropped, and so is surrounding whitespace."""
    template = template or PromptTemplate()
    text = without_echo(text, template)
    match = header_line(template).search(text)
    return (text if match is None else text[: match.start()]).strip()


def header_reached(text: str, template: PromptTemplate) -> bool:
    """Whether decoded continuation `text` has gone past the response into a following header of the template."""
    if template.response_header.startswith(text.lstrip()):
        return False  # may still be an echoed response header
    return header_line(template).search(without_echo(text, template)) is not None


def stop_at_header(tokenizer: Any, template: PromptTemplate, prompt_width: int) -> Any:
    """A stopping criterion that ends each row once it starts a new block of the template (a line
    beginning with one of its headers), so a model that never learned EOS does not run on to the token
    limit after its response is complete."""
    import torch
    from transformers import StoppingCriteria

    # Decoding every row in full at every step is wasteful: look only where a header may just have been
    # completed, that is where its last character just appeared.
    ends = {header[-1] for header in template_headers(template)}
    if not all(end.isascii() for end in ends):
        ends.add("\ufffd")  # a character split across tokens decodes to this until it is whole

    class StopAtHeader(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            new = input_ids[:, prompt_width:]
            for row, recent in enumerate(tokenizer.batch_decode(new[:, -2:], skip_special_tokens=True)):
                if any(end in recent for end in ends):
                    text = tokenizer.decode(new[row], skip_special_tokens=True)
                    done[row] = header_reached(text, template)
            return done

    return StopAtHeader()


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS (the one training appends) plus any the model's generation config names."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, list) else [configured]:
        if token is not None and token not in ids:
            ids.append(token)
    return ids


def context_limit(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Input ids and attention mask with padding on the left, so every row's last token is real."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def model_device(model: Any) -> Any:
    return next(model.parameters()).device


class Generator:
    """A model with its tokenizer and prompt template, and what generating from it needs."""

    def __init__(self, model: Any, tokenizer: Any, template: PromptTemplate | None = None):
        self.model = model
        self.tokenizer = tokenizer
        # The template saved with the model's directory, else the standard Alpaca one.
        self.template = template or PromptTemplate.for_model(local_dir(getattr(model, "name_or_path", None)))
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.limit = context_limit(model)

    def encode(self, records: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """Prompt ids for records with `instruction` and optional `input`, as training encodes them."""
        from sft.data.tokenize import encode_prompts

        prompts = [self.template.render(str(r.get("instruction") or ""), str(r.get("input") or "")) for r in records]
        return encode_prompts(self.tokenizer, prompts)

    def room(self, prompt_length: int, max_new_tokens: int, record: int | None = None) -> int:
        """New tokens a prompt of `prompt_length` may have: `max_new_tokens`, within the model's context.
        `record` (counted from 0) names the prompt in the error when there is no room at all."""
        room = max_new_tokens if self.limit is None else min(max_new_tokens, self.limit - prompt_length)
        if room < 1:
            which = "a prompt" if record is None else f"record {record}: its prompt"
            whose = "the" if record is None else "its"
            raise SFTError(
                f"{which} of {prompt_length} tokens fills the model's context of {self.limit} tokens; "
                f"shorten {whose} instruction or input"
            )
        return room

    def rooms(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[int]:
        """`room` for every prompt, all checked before anything is generated; the error names the first
        record (counted from 0) that leaves no room, and how many more do not fit."""
        rooms, errors = [], []
        for record, ids in enumerate(prompt_ids):
            try:
                rooms.append(self.room(len(ids), max_new_tokens, record))
            except SFTError as error:
                errors.append((record, error))
        if len(errors) == 1:
            raise errors[0][1]
        if errors:
            more = [str(record) for record, _ in errors[1:]]
            listed = ", ".join(more[:5]) + (", ..." if len(more) > 5 else "")
            records = "record does" if len(more) == 1 else "records do"
            raise SFTError(f"{errors[0][1]} ({len(more)} more {records} not fit either: {listed})")
        return rooms

    def generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        """What every `model.generate` call here passes, besides the inputs and the token budget."""
        return {
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids,
            "use_cache": True,
            **settings.sampling_kwargs(),
        }

    def finish(self, new_ids: list[int]) -> GenerationResult:
        """The response in one row of generated ids, cut at the first EOS.

        A row stopped at a following header of the template is padded afterwards, and the pad token is
        often the EOS token, so such a row does not count as ended at EOS.
        """
        end = next((i for i, token in enumerate(new_ids) if token in self.eos_ids), None)
        tokens = new_ids if end is None else new_ids[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        ended = end is not None and not header_reached(text, self.template)
        return GenerationResult(extract_response(text, self.template), len(tokens), ended)


def plan_batches(prompt_ids: Sequence[Sequence[int]], rooms: Sequence[int], batch_size: int) -> list[list[int]]:
    """Record indices in batches of at most `batch_size` whose rows all have the same room, so that no row
    gets fewer new tokens for the company it keeps: left padding gives every row the batch's width, and
    the room of the batch is that of its longest prompt.

    Prompts with their full `max_new_tokens` of room share batches freely (the widest still leaves that
    room); a prompt near the end of the context shares only with prompts of its own length. Longest
    first, so that running out of memory shows at once, and so that a batch pads little.
    """
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    batches: list[list[int]] = []
    for index in order:
        if batches and len(batches[-1]) < batch_size and rooms[batches[-1][0]] == rooms[index]:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def generate_responses(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    settings: GenerationSettings | None = None,
    template: PromptTemplate | None = None,
    progress: bool = True,
) -> list[GenerationResult]:
    """One response per record (`instruction`, optional `input`), in the order of `records`.

    Every record gets `settings.max_new_tokens` new tokens, or what is left of the model's context
    after its prompt where that is less, whatever the batch size (see `plan_batches`); a prompt that
    leaves no room is an error naming its record, raised before anything is generated. Results come
    back in the original order. `template` defaults to the one saved with the model's directory, else
    the standard Alpaca template.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    settings = settings or GenerationSettings()
    if not records:
        return []
    generator = Generator(model, tokenizer, template)
    prompt_ids = generator.encode(records)
    rooms = generator.rooms(prompt_ids, settings.max_new_tokens)
    options = generator.generate_kwargs(settings)
    torch.manual_seed(settings.seed)
    was_training = model.training  # a model handed over mid-training goes back to training mode
    model.eval()
    device = model_device(model)
    results: list[GenerationResult | None] = [None] * len(records)
    bar = tqdm(
        total=len(records),
        desc="Generating",
        unit="resp",
        disable=not progress,
        dynamic_ncols=True,
        bar_format=BAR_FORMAT,
    )
    generated = 0
    try:
        with torch.inference_mode():
            for batch in plan_batches(prompt_ids, rooms, settings.batch_size):
                ids, mask = left_pad([prompt_ids[i] for i in batch], generator.pad_id)
                output = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=rooms[batch[0]],
                    stopping_criteria=StoppingCriteriaList(
                        [stop_at_header(tokenizer, generator.template, ids.shape[1])]
                    ),
                    **options,
                )
                for row, index in enumerate(batch):
                    results[index] = generator.finish(output[row, ids.shape[1] :].tolist())
                    generated += results[index].new_tokens
                bar.update(len(batch))
                bar.set_postfix_str(f"{generated / max(bar.format_dict['elapsed'], 1e-9):.1f} tokens/s")
    finally:
        bar.close()
        model.train(was_training)
    return [result for result in results if result is not None]


def generate_response(
    model: Any,
    tokenizer: Any,
    instruction: str,
    input: str = "",
    max_new_tokens: int = GenerationSettings.max_new_tokens,
    temperature: float = 0.0,
    template: PromptTemplate | None = None,
) -> str:
    """The model's response to one instruction (and optional input), as text."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=1)
    record = {"instruction": instruction, "input": input}
    return generate_responses(model, tokenizer, [record], settings, template, progress=False)[0].text


def local_dir(name: Any) -> Path | None:
    return Path(name) if isinstance(name, str) and name and Path(name).is_dir() else None


def load_for_inference(name: str) -> tuple[Any, Any, PromptTemplate]:
    """Model (eval mode, on the GPU where there is one), left-padding tokenizer, and the template
    the model was trained with, for any model argument `sft.models` accepts."""
    import torch

    from sft.models.load import load_model, load_tokenizer, resolve_model

    source = resolve_model(name)
    tokenizer = load_tokenizer(name, padding_side="left")
    model = load_model(name)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    return model, tokenizer, PromptTemplate.for_model(local_dir(source))
