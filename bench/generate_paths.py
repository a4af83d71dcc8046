"""Generation paths, greedy, on one loaded model: `python -m bench.generate_paths --spec JSON --out FILE`.

spec: {"model", "data", "max_new_tokens", "batch_size", "prompts": {path: how many test prompts}}. Each
path takes the first N prompts of the seed's test split; a random-init model never stops early, so
each prompt yields max_new_tokens tokens and a slow path is given fewer prompts.
"""

import time
from collections.abc import Callable
from typing import Any

from bench.workload import test_prompts


def seed_way(model: Any, tokenizer: Any, records: list[dict[str, str]], max_new_tokens: int) -> list[list[int]]:
    """The book's `generate`: one prompt at a time, the whole sequence through the model for every
    new token (no KV cache), the last position's argmax appended, stop at EOS."""
    import torch

    context = model.config.n_positions if hasattr(model.config, "n_positions") else model.config.max_position_embeddings
    outputs = []
    for ids in prompt_ids(tokenizer, records):
        sequence = torch.tensor([ids])
        new: list[int] = []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(sequence[:, -context:], use_cache=False).logits[:, -1, :]
                token = int(torch.argmax(logits, dim=-1))
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
                sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
        outputs.append(new)
    return outputs


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
    counts = spec["prompts"]
    lengths = [len(ids) for ids in prompt_ids(tokenizer, records)]
    results: dict[str, Any] = {}
    texts: dict[str, str] = {}

    def report(name: str, new_tokens: list[int], seconds: float, first_text: str) -> None:
        n = len(new_tokens)
        results[name] = {
            "prompts": n, "new_tokens": sum(new_tokens), "seconds": seconds,
            "tokens_per_s": sum(new_tokens) / seconds, "mean_prompt_tokens": sum(lengths[:n]) / n,
        }
        texts[name] = first_text

    if counts.get("sft_batched"):
        chosen = records[: counts["sft_batched"]]
        out, seconds = timed(lambda: generate_responses(
            model, tokenizer, chosen, batch_size=spec["batch_size"], max_new_tokens=limit, progress=False,
            template=PromptTemplate(),
        ))
        report("sft_batched", [r.new_tokens for r in out], seconds, out[0].text)
    for name, fn in (("hf_generate", hf_generate), ("seed_way", seed_way)):
        if counts.get(name):
            out, seconds = timed(lambda fn=fn, n=counts[name]: fn(model, tokenizer, records[:n], limit))
            report(name, [len(ids) for ids in out], seconds, extract_response(tokenizer.decode(out[0])))
    # Greedy decoding of the same prompt should give the same response on every path.
    reference = texts.get("seed_way", texts.get("hf_generate"))
    for name in results:
        results[name]["same_first_response"] = texts[name] == reference
    return {"threads": torch.get_num_threads(), "max_new_tokens": limit, "batch_size": spec["batch_size"],
            "paths": results}


if __name__ == "__main__":
    from bench.child import child_main

    child_main(run)
