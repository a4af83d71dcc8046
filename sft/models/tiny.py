"""Few-layer models with random weights and a small BPE tokenizer, built on the fly.

They make the whole pipeline (training, resume, generation, chat) testable in seconds on a CPU
with no download. Building is deterministic, so every test and CI run sees the same model.
"""

from pathlib import Path
from typing import Any

from sft.paths import atomic_directory, cache_dir

VOCAB_SIZE = 512
_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "The quick brown fox jumps over the lazy dog. Convert, rewrite, classify, summarise, translate.",
    "What is the capital of France? Paris is the capital of France. 0123456789 {}[]\":,.!?'-()",
]


def build_tokenizer(style: str) -> Any:
    """A byte-level BPE tokenizer: GPT-2 style (no pad token) or Llama style (BOS added, `</s>` EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>"] if style == "gpt2" else ["<unk>", "<s>", "</s>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if style == "gpt2":
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )


def build_model(style: str, vocab_size: int, seed: int = 0) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if style == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=512, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
        )
    else:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
            tie_word_embeddings=True,
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_tiny_model(directory: str | Path, style: str) -> Path:
    from transformers.utils import logging as hf_logging

    from sft.models.load import save_cached_model

    tokenizer = build_tokenizer(style)
    model = build_model(style, len(tokenizer))
    hf_logging.disable_progress_bar()  # a bar for a 100 kB file is noise
    try:
        save_cached_model(model, Path(directory))
    finally:
        hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(directory)
    return Path(directory)


def tiny_model_dir(name: str) -> Path:
    """The cached tiny model for `sft-tiny-gpt2` or `sft-tiny-llama`, built on first use."""
    style = name.removeprefix("sft-tiny-")
    target = cache_dir() / "models" / name
    if not (target / "config.json").is_file():
        from filelock import FileLock

        with FileLock(str(cache_dir() / f"{name}.lock")):
            if not (target / "config.json").is_file():
                from sft.models.load import check_cache_entry_absent

                check_cache_entry_absent(target)
                with atomic_directory(target) as staging:
                    save_tiny_model(staging, style)
    return target
