"""The benchmark's models, built offline and cached: a GPT-2 tokenizer and a GPT-2-medium-shaped model.

The GPT-2 BPE ranks ship inside the `openai-whisper` source distribution (`whisper/assets/gpt2.tiktoken`);
pip fetches it from the package index once, and the fast tokenizer built from it is cached. The model has
GPT-2 medium's shape with random weights from a fixed seed, saved once so that every benchmark path
starts from the same weights.
"""

import base64
import logging
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sft.paths import atomic_directory, cache_dir

logger = logging.getLogger(__name__)

WHISPER_SDIST = "openai-whisper==20250625"
TIKTOKEN_MEMBER = "whisper/assets/gpt2.tiktoken"
EOS = "<|endoftext|>"
GPT2_MEDIUM = {"n_embd": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 50257, "n_positions": 1024}
MODEL_SEED = 123


def bench_dir() -> Path:
    path = cache_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def gpt2_ranks_file() -> Path:
    """The cached `gpt2.tiktoken` file, extracted from the whisper sdist downloaded with pip on first use."""
    target = bench_dir() / "gpt2.tiktoken"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                WHISPER_SDIST,
                "-d",
                tmp,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(TIKTOKEN_MEMBER))
            data = archive.extractfile(member).read()
    partial = target.with_suffix(".tmp")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def read_ranks(path: Path) -> dict[bytes, int]:
    """tiktoken's format: one `base64(token) rank` pair per line."""
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_gpt2_tokenizer(ranks_path: Path) -> Any:
    """GPT-2's byte-level BPE: its regex pre-tokenizer, byte decoder and `<|endoftext|>` as token 50256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class RanksConverter(TikTokenConverter):
        # The converter reads the file with the tiktoken package; the format needs no library.
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_ranks(Path(tiktoken_url))

    vocab, merges = RanksConverter(str(ranks_path)).extract_vocab_merges_from_model(str(ranks_path))
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        model_max_length=GPT2_MEDIUM["n_positions"],
    )
    fast.add_special_tokens({"eos_token": EOS})
    return fast


def gpt2_medium_dir() -> Path:
    """A directory `sft.models.load.load_model` accepts: GPT-2 medium's shape, seeded random weights and
    GPT-2's tokenizer."""
    target = bench_dir() / "gpt2-medium-random"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from filelock import FileLock
    from transformers import GPT2Config, GPT2LMHeadModel

    with FileLock(str(bench_dir() / "gpt2-medium-random.lock")):
        if (target / "model.safetensors").is_file():
            return target
        tokenizer = build_gpt2_tokenizer(gpt2_ranks_file())
        if len(tokenizer) != GPT2_MEDIUM["vocab_size"] or tokenizer.eos_token_id != 50256:
            raise RuntimeError(f"GPT-2 tokenizer built wrong: {len(tokenizer)} tokens, EOS {tokenizer.eos_token_id}")
        # The book's chapter 7 fine-tunes with dropout off (drop_rate 0.0); so does this model.
        config = GPT2Config(
            **GPT2_MEDIUM, bos_token_id=50256, eos_token_id=50256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
        )
        torch.manual_seed(MODEL_SEED)
        model = GPT2LMHeadModel(config)
        logger.info("Saving a random-init GPT-2-medium-shaped model to %s (once)", target)
        with atomic_directory(target) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return target


def model_dir(name: str) -> str:
    """Benchmark model name -> a directory or an sft model name."""
    if name == "gpt2-medium":
        return str(gpt2_medium_dir())
    return name
