"""The training-path change this benchmark first measured beside sft's default (`sft_proposed`).

The lean loss (labelled positions only, one-kernel GELU) has since become sft's default trainer, so
this module re-exports it from `sft.lean_loss`; the `sft_proposed` path now measures the same code as
`sft_default` and serves as a run-to-run noise check.
"""

from sft.lean_loss import LeanLossSFTTrainer, add_lean_head, fuse_gelu, lean_head_supported

__all__ = ["LeanLossSFTTrainer", "add_lean_head", "fuse_gelu", "lean_head_supported"]
