"""What each fine-tuning method trains: PEFT configurations for adapters, 4-bit loading for QLoRA, and
the weights full fine-tuning keeps fixed."""

from typing import Any

from sft.errors import SFTError

PROMPT_TUNING_INIT = "Follow the instruction and write a short, correct response."


def build_peft_config(model_args: Any, tokenizer_path: str) -> Any:
    """LoRA or prompt tuning config for `SFTTrainer(peft_config=...)`; None for full fine-tuning."""
    method = model_args.method
    if method == "full":
        return None
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if method in {"lora", "qlora"}:
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
            modules_to_save=model_args.lora_modules_to_save,
            use_rslora=model_args.use_rslora,
            use_dora=model_args.use_dora,
        )
    if method == "prompt_tuning":
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=model_args.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=PROMPT_TUNING_INIT,
            tokenizer_name_or_path=tokenizer_path,
        )
    raise SFTError(f"unknown method {method!r}; choose one of full, lora, qlora, prompt_tuning")


def quantization_config(model_args: Any) -> Any:
    """4-bit loading for QLoRA, which needs a CUDA GPU and bitsandbytes."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise SFTError(
            "method: qlora needs a CUDA GPU and the bitsandbytes package, and this machine lacks "
            f"{'a CUDA GPU' if not torch.cuda.is_available() else 'bitsandbytes'}; use method: lora instead"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def freeze_parameters(model: Any, patterns: list[str]) -> list[str]:
    """Stop training every weight whose name matches one of the regular expressions; returns their names.

    Transformers and PEFT freeze only through adapters, so full fine-tuning with some weights held
    fixed (the embeddings, say) is set here. A pattern that matches nothing is a typo, and is refused.
    """
    import re

    regexes = [re.compile(pattern) for pattern in patterns]
    matched = {name: weight for name, weight in model.named_parameters() if any(r.search(name) for r in regexes)}
    for pattern, regex in zip(patterns, regexes):
        if not any(regex.search(name) for name in matched):
            raise SFTError(
                f"freeze_parameters: {pattern!r} matches no weight of the model; "
                "names look like 'model.embed_tokens.weight' or 'model.layers.0.mlp.up_proj.weight'"
            )
    for weight in matched.values():
        weight.requires_grad_(False)
    return list(matched)
