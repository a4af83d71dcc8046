"""sft: instruction fine-tuning for causal language models on the Hugging Face stack."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["generate_response", "__version__"]


def __getattr__(name: str) -> Any:
    # Deferred so that `import sft` (and `sft --help`) never pays for torch and transformers.
    if name == "generate_response":
        from sft.inference.generate import generate_response

        return generate_response
    raise AttributeError(f"module 'sft' has no attribute {name!r}")
