"""Responses from a causal LM for Alpaca prompts: batched, left-padded, greedy unless asked to sample.

Prompts are encoded with `encode_prompts`, the encoder training uses, so the model sees at
inference exactly the prompt tokens it was trained on. `Generator` holds what every way of generating
shares (prompt ids, EOS ids, the room left in the context, cutting a response out of generated ids):
batched generation here and streamed chat both use it.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.settings import GenerationSettings

# A model that never learned to stop tends to go on with the next `### Instruction:` block.
HEADER_LINE = re.compile(r"^###\s", re.MULTILINE)
# tqdm turns a rate below 1/s into seconds per item; responses per second reads better on a CPU.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclass
class GenerationResult:
    text: str  # the response only: no prompt, no template markers, no surrounding whitespace
    new_tokens: int  # tokens generated up to EOS, a following `### ` header, or the limit
    ended_at_eos: bool  # the model closed the response with EOS, within max_new_tokens


def extract_response(text: str, template: PromptTemplate | None = None) -> str:
    """The response in decoded continuation `text`: an echoed response header and anything from a
    following `### ` header on are dropped, and so is surrounding whitespace."""
    header = (template or PromptTemplate()).response_header
    text = text.lstrip()
    if text.startswith(header):
        text = text[len(header) :]
    match = HEADER_LINE.search(text)
    if match:
        text = text[: match.start()]
    return text.strip()


def header_reached(text: str, template: PromptTemplate) -> bool:
    """Whether decoded continuation `text` has gone past the response into a following `### ` header."""
    text = text.lstrip()
    if template.response_header.startswith(text):
        return False  # may still be an echoed response header
    return HEADER_LINE.search(text.removeprefix(template.response_header)) is not None


def stop_at_header(tokenizer: Any, template: PromptTemplate, prompt_width: int) -> Any:
    """A stopping criterion that ends each row once it starts a new `### ` block, so a model that
    never learned EOS does not run on to the token limit after its response is complete."""
    import torch
    from transformers import StoppingCriteria

    class StopAtHeader(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            new = input_ids[:, prompt_width:]
            # Decoding every row in full at every step is wasteful: look only where a '#' just appeared.
            for row, recent in enumerate(tokenizer.batch_decode(new[:, -2:], skip_special_tokens=True)):
                if "#" in recent:
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

    def room(self, prompt_length: int, max_new_tokens: int) -> int:
        """New tokens a prompt of `prompt_length` may have: `max_new_tokens`, within the model's context."""
        room = max_new_tokens if self.limit is None else min(max_new_tokens, self.limit - prompt_length)
        if room < 1:
            raise SFTError(
                f"a prompt of {prompt_length} tokens fills the model's context of {self.limit}; shorten the input"
            )
        return room

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

        A row stopped at a following `### ` header is padded afterwards, and the pad token is often
        the EOS token, so such a row does not count as ended at EOS.
        """
        end = next((i for i, token in enumerate(new_ids) if token in self.eos_ids), None)
        tokens = new_ids if end is None else new_ids[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        ended = end is not None and not header_reached(text, self.template)
        return GenerationResult(extract_response(text, self.template), len(tokens), ended)


def generate_responses(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    settings: GenerationSettings | None = None,
    template: PromptTemplate | None = None,
    progress: bool = True,
) -> list[GenerationResult]:
    """One response per record (`instruction`, optional `input`), in the order of `records`.

    Prompts are sorted by length so that a batch pads little, longest first so that running out
    of memory shows at once; results come back in the original order. `template` defaults to the
    one saved with the model's directory, else the standard Alpaca template.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import StoppingCriteriaList

    settings = settings or GenerationSettings()
    if not records:
        return []
    generator = Generator(model, tokenizer, template)
    prompt_ids = generator.encode(records)
    order = sorted(range(len(records)), key=lambda i: len(prompt_ids[i]), reverse=True)
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
            for first in range(0, len(order), settings.batch_size):
                batch = order[first : first + settings.batch_size]
                ids, mask = left_pad([prompt_ids[i] for i in batch], generator.pad_id)
                output = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=generator.room(ids.shape[1], settings.max_new_tokens),
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
