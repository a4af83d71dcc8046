"""Generation paths, greedy, on one loaded model: `python -m bench.generate_paths --spec JSON --out FILE`.

spec: {"model", "data", "max_new_tokens", "batch_size", "extra_batch_sizes": [...],
"prompts": {"sft_batched": N, "hf_generate": N}, "seed_way": {"new_tokens": N, "samples": N}}.
Each path takes the first prompts of the seed's test split; a random-init model never stops early, so
each prompt yields max_new_tokens tokens and the slower path is given fewer prompts. The seed way runs
about a token a second: it generates a short continuation for real, and its time for the full one is
taken from timed steps spread over it (`seed_way_sampled`).
"""

import time
from collections.abc import Callable
from typing import Any

from bench.workload import test_prompts


def seed_way(model: Any, tokenizer: Any, records: list[dict[str, str]], max_new_tokens: int) -> list[list[int]]:
    """The book's `generate`: one prompt at a time, the whole sequence through the model for every
    new token (no KV cache), the last position's argmax appended, stop at EOS."""
    import torch

    outputs = []
    for ids in prompt_ids(tokenizer, records):
        sequence = torch.tensor([ids])
        new: list[int] = []
        for _ in range(max_new_tokens):
            token = seed_step(model, sequence)
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
        outputs.append(new)
    return outputs


def seed_step(model: Any, sequence: Any) -> int:
    """One token the book's way: logits for the whole (context-cropped) sequence, argmax of the last."""
    import torch

    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    with torch.no_grad():
        logits = model(sequence[:, -context:], use_cache=False).logits[:, -1, :]
    return int(torch.argmax(logits, dim=-1))


def seed_way_sampled(model: Any, prompt: list[int], continuation: list[int], samples: int) -> dict[str, Any]:
    """The seed way's time for a whole continuation, from `samples` of its steps.

    A step's cost depends only on the sequence length, and greedy decoding makes the continuation known
    (from a faster path, checked here token by token), so the steps at evenly spaced positions are timed
    and the rest interpolated linearly in length.
    """
    import numpy as np
    import torch

    positions = sorted({round(p) for p in np.linspace(0, len(continuation) - 1, samples)})
    times, agree = [], 0
    for k in positions:
        sequence = torch.tensor([prompt + continuation[:k]])
        start = time.perf_counter()
        token = seed_step(model, sequence)
        times.append(time.perf_counter() - start)
        agree += token == continuation[k]
    total = float(np.interp(np.arange(len(continuation)), positions, times).sum())
    return {"timed_steps": len(positions), "steps": len(continuation), "seconds": total,
            "agreeing_tokens": agree}


def hf_generate(model: Any, tokenizer: Any, records: list[dict[str, str]], max_new_tokens: int) -> list[list[int]]:
    """`model.generate` one prompt at a time (KV cache, greedy)."""
    import torch

    outputs = []
    for ids in prompt_ids(tokenizer, records):
        inputs = torch.tensor([ids])
        with torch.inference_mode():
            output = model.generate(
                input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
        new = output[0, inputs.shape[1]:].tolist()
        outputs.append(new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new)
    return outputs


def prompt_ids(tokenizer: Any, records: list[dict[str, str]]) -> list[list[int]]:
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import encode_prompts

    template = PromptTemplate()
    return encode_prompts(tokenizer, [template.render(r["instruction"], r.get("input") or "") for r in records])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from sft.data.template import PromptTemplate
    from sft.generate import extract_response, generate_responses
    from sft.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"], padding_side="left")
    model = load_model(spec["model"], dtype=torch.float32)
    model.eval()
    records = test_prompts(spec["data"], tokenizer)
    limit = spec["max_new_tokens"]
    lengths = [len(ids) for ids in prompt_ids(tokenizer, records)]
    paths: dict[str, dict[str, Any]] = {}

    def measure(fn: Callable[[], Any], prompts: int, new_tokens: int) -> dict[str, Any]:
        cpu = time.process_time()
        value, seconds = timed(fn)
        return {"prompts": prompts, "new_tokens": new_tokens, "seconds": seconds,
                "tokens_per_s": new_tokens / seconds, "cores_used": (time.process_time() - cpu) / seconds,
                "mean_prompt_tokens": sum(lengths[:prompts]) / prompts, "_value": value}

    # sft's batched path at its default batch size, and at any other sizes asked for.
    texts: dict[str, str] = {}
    for batch_size in [spec["batch_size"], *spec.get("extra_batch_sizes", [])]:
        name = "sft_batched" if batch_size == spec["batch_size"] else f"sft_batched_{batch_size}"
        n = spec["prompts"]["sft_batched"]
        figures = measure(lambda b=batch_size, n=n: generate_responses(
            model, tokenizer, records[:n], batch_size=b, max_new_tokens=limit, progress=False,
            template=PromptTemplate()), n, 0)
        out = figures.pop("_value")
        figures.update(new_tokens=sum(r.new_tokens for r in out), batch_size=batch_size)
        figures["tokens_per_s"] = figures["new_tokens"] / figures["seconds"]
        paths[name], texts[name] = figures, out[0].text

    n = spec["prompts"]["hf_generate"]
    figures = measure(lambda: hf_generate(model, tokenizer, records[:n], limit), n, 0)
    continuations = figures.pop("_value")
    figures["new_tokens"] = sum(map(len, continuations))
    figures["tokens_per_s"] = figures["new_tokens"] / figures["seconds"]
    paths["hf_generate"], texts["hf_generate"] = figures, extract_response(tokenizer.decode(continuations[0]))

    # The seed way: a short continuation generated for real (checked against `generate`'s), and the
    # full continuation's time from a sample of its steps.
    real_tokens, samples = spec["seed_way"]["new_tokens"], spec["seed_way"]["samples"]
    real = measure(lambda: seed_way(model, tokenizer, records[:1], real_tokens), 1, 0)
    generated = real.pop("_value")[0]
    sampled = seed_way_sampled(model, prompt_ids(tokenizer, records[:1])[0], continuations[0], samples)
    paths["seed_way"] = {
        "prompts": 1, "new_tokens": sampled["steps"], "seconds": sampled["seconds"],
        "tokens_per_s": sampled["steps"] / sampled["seconds"], "mean_prompt_tokens": lengths[0],
        "timed_steps": sampled["timed_steps"], "agreeing_timed_steps": sampled["agreeing_tokens"],
        "generated_for_real": len(generated), "real_tokens_per_s": len(generated) / real["seconds"],
        "cores_used": real["cores_used"],
    }
    # Greedy decoding gives every path the same response to the same prompt.
    for name in paths:
        paths[name]["same_first_response"] = texts.get(name, texts["hf_generate"]) == texts["hf_generate"]
    paths["seed_way"]["same_first_response"] = (generated == continuations[0][: len(generated)]
                                                and sampled["agreeing_tokens"] == sampled["timed_steps"])
    return {"threads": torch.get_num_threads(), "max_new_tokens": limit, "batch_size": spec["batch_size"],
            "paths": paths}


if __name__ == "__main__":
    from bench.child import child_main

    child_main(run)
