"""Generation paths, greedy, fp32, one per child process: `python -m bench.generate_paths --spec JSON --out FILE`.

spec: {"path": sft_batched | hf_generate | seed_way, "model", "data", "max_new_tokens", "prompts": N,
"batch_size" (sft_batched), "real_tokens", "samples", "continuation" (seed_way)}. Each path takes the
first N prompts of the seed's test split; a random-init model never stops early, so each prompt yields
max_new_tokens tokens. The seed way runs about a token a second: it generates a short continuation for
real, and its time for the full one is taken from timed steps spread over it (`seed_way_sampled`).
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
    return {"timed_steps": len(positions), "steps": len(continuation), "seconds": total, "agreeing_tokens": agree}


def hf_generate(model: Any, tokenizer: Any, records: list[dict[str, str]], max_new_tokens: int) -> list[list[int]]:
    """`model.generate` one prompt at a time (KV cache, greedy)."""
    import torch

    outputs = []
    for ids in prompt_ids(tokenizer, records):
        inputs = torch.tensor([ids])
        with torch.inference_mode():
            output = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = output[0, inputs.shape[1] :].tolist()
        outputs.append(new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new)
    return outputs


def prompt_ids(tokenizer: Any, records: list[dict[str, str]]) -> list[list[int]]:
    from sft.data.template import PromptTemplate
    from sft.data.tokenize import encode_prompts

    template = PromptTemplate()
    return encode_prompts(tokenizer, [template.render(r["instruction"], r.get("input") or "") for r in records])


def measure(fn: Callable[[], list[list[int]] | list[Any]], prompt_lengths: list[int]) -> dict[str, Any]:
    """Wall and CPU time around `fn`; CPU seconds per wall second below the thread count mean that
    other work took cores from the path."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    seconds = time.perf_counter() - wall
    return {
        "prompts": len(prompt_lengths),
        "seconds": seconds,
        "cores_used": (time.process_time() - cpu) / seconds,
        "mean_prompt_tokens": sum(prompt_lengths) / len(prompt_lengths),
        "_value": value,
    }


def static_vs_continuous(spec: dict[str, Any]) -> dict[str, Any]:
    """sft's static batches (`generate_responses`, batch 32) or Transformers' continuous batching
    (`generate_batch`, paged attention) on the same prompts, greedy, fp32. The responses are cut the same way
    (`Generator.finish`: EOS, then the template's own headers), so their texts can be compared record by record.
    Continuous batching has no stopping criteria: a response that static batches end at a template header runs
    on to the limit there, and is cut to the same text afterwards."""
    import torch
    from transformers import GenerationConfig

    from sft.data.template import PromptTemplate
    from sft.inference.generate import Generator, generate_responses
    from sft.inference.settings import GenerationSettings
    from sft.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"], padding_side="left")
    model = load_model(spec["model"], dtype=torch.float32)
    model.eval()
    records = test_prompts(spec["data"], tokenizer)[: spec["prompts"]]
    generator = Generator(model, tokenizer, PromptTemplate())
    ids = generator.encode(records)
    limit = spec["max_new_tokens"]
    if spec["path"] == "static":
        settings = GenerationSettings(max_new_tokens=limit, batch_size=spec.get("batch_size", 32))
        figures = measure(
            lambda: generate_responses(model, tokenizer, records, settings, PromptTemplate(), progress=False),
            [len(i) for i in ids],
        )
        results = figures.pop("_value")
    else:
        config = GenerationConfig(
            max_new_tokens=limit, do_sample=False, eos_token_id=generator.eos_ids, pad_token_id=generator.pad_id
        )
        figures = measure(
            # warmup pre-captures CUDA graphs; on a CPU it only adds seconds (21 s against 33 s for 16 x 16 here).
            lambda: model.generate_batch(inputs=ids, generation_config=config, progress_bar=False, warmup=False),
            [len(i) for i in ids],
        )
        out = figures.pop("_value")
        results = [generator.finish(list(out[f"req_{i}"].generated_tokens)) for i in range(len(ids))]
    figures.update(
        path=spec["path"],
        threads=torch.get_num_threads(),
        max_new_tokens=limit,
        new_tokens=sum(r.new_tokens for r in results),
        responses_per_s=len(results) / figures["seconds"],
        texts=[r.text for r in results],
    )
    return figures


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One path: sft_batched (at spec["batch_size"]), hf_generate, or seed_way (which needs the
    first prompt's continuation from hf_generate, passed as spec["continuation"])."""
    import torch

    if spec["path"] in ("static", "continuous"):
        return static_vs_continuous(spec)
    from sft.data.template import PromptTemplate
    from sft.inference.generate import extract_response, generate_responses
    from sft.inference.settings import GenerationSettings
    from sft.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(spec["model"], padding_side="left")
    model = load_model(spec["model"], dtype=torch.float32)
    model.eval()
    records = test_prompts(spec["data"], tokenizer)[: spec.get("prompts", 1)]
    lengths = [len(ids) for ids in prompt_ids(tokenizer, records)]
    limit = spec["max_new_tokens"]
    path = spec["path"]
    if path == "sft_batched":
        figures = measure(
            lambda: generate_responses(
                model,
                tokenizer,
                records,
                GenerationSettings(max_new_tokens=limit, batch_size=spec["batch_size"]),
                PromptTemplate(),
                progress=False,
            ),
            lengths,
        )
        out = figures.pop("_value")
        figures.update(
            new_tokens=sum(r.new_tokens for r in out), batch_size=spec["batch_size"], first_response=out[0].text
        )
    elif path == "hf_generate":
        figures = measure(lambda: hf_generate(model, tokenizer, records, limit), lengths)
        out = figures.pop("_value")
        figures.update(
            new_tokens=sum(map(len, out)),
            continuation=out[0],
            first_response=extract_response(tokenizer.decode(out[0])),
        )
    else:
        # A short continuation generated for real, then the full one's time from a sample of its steps.
        continuation = spec["continuation"]
        real = measure(lambda: seed_way(model, tokenizer, records[:1], spec["real_tokens"]), lengths[:1])
        generated = real.pop("_value")[0]
        sampled = seed_way_sampled(model, prompt_ids(tokenizer, records[:1])[0], continuation, spec["samples"])
        figures = {
            "prompts": 1,
            "new_tokens": sampled["steps"],
            "seconds": sampled["seconds"],
            "mean_prompt_tokens": lengths[0],
            "cores_used": real["cores_used"],
            "timed_steps": sampled["timed_steps"],
            "agreeing_timed_steps": sampled["agreeing_tokens"],
            "generated_for_real": len(generated),
            "real_tokens_per_s": len(generated) / real["seconds"],
            "same_tokens": generated == continuation[: len(generated)]
            and sampled["agreeing_tokens"] == sampled["timed_steps"],
        }
    figures["tokens_per_s"] = figures["new_tokens"] / figures["seconds"]
    return {"path": path, "threads": torch.get_num_threads(), **figures}


if __name__ == "__main__":
    from bench.child import child_main

    child_main(run)
