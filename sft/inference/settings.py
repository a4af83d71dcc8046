"""How responses are generated: one settings object, passed whole through generate, eval, compare and
chat, and recorded with every evaluation."""

import math
from dataclasses import asdict, dataclass
from typing import Any

from sft.errors import SFTError

# Decoding on a CPU is bound by reading the weights once per step, so more rows per step come almost
# free: 32 prompts together gave 2x the tokens/s of 8 on GPT-2 medium, the same responses (bench/).
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy unless `temperature` is above 0; then nucleus sampling with `top_p`, seeded by `seed`."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be a whole number of at least 1, got {self.max_new_tokens}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"--batch-size must be a whole number of at least 1, got {self.batch_size}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            problems.append(f"--temperature must be 0 (greedy) or a positive number, got {self.temperature}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            problems.append(f"--top-p must be more than 0 and at most 1, got {self.top_p}")
        if problems:
            raise SFTError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def sampling_kwargs(self) -> dict[str, Any]:
        """`generate` keywords: greedy for temperature 0, else nucleus sampling with top-k switched off."""
        if self.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}

    def record(self) -> dict[str, Any]:
        """The settings as saved in metrics.json."""
        return {**asdict(self), "greedy": self.greedy}
