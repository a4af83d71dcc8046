"""A cheaper training loss for instruction data, as a drop-in `SFTTrainer`.

Written by hand because TRL lacks it on CPUs: TRL's fused LM head keeps only labelled positions on
Triton devices, but elsewhere it projects every position onto the vocabulary, computes entropy and
top-1 accuracy for its logs, and recomputes the projection in the backward pass. Instruction data
labels only the responses (about a third of the tokens of the seed data), so `lm_head(hidden[labelled])`
plus cross entropy gives the same loss and gradients for a fraction of the work.

GPT-2's `gelu_new` is also swapped for torch's one-kernel tanh GELU: the same function, one pass over
the MLP activations instead of eight. The saved config is unchanged.
"""

import functools
import types
from typing import Any

from trl import SFTTrainer

from sft.training.fast_lora import frozen_linear, speed_up_lora
from sft.training.packed_attention import use_packed_attention

# Config keys of models whose logits are scaled or capped after the projection; TRL's head handles them.
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def fuse_gelu(model: Any) -> int:
    """Swap every `NewGELUActivation` for `GELUTanh`; returns how many were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def lean_head_supported(model: Any) -> bool:
    """Models whose logits are a plain projection of the last hidden state."""
    config = model.config.get_text_config()
    scaled = any(getattr(config, key, None) not in (None, 1.0) for key in LOGIT_TRANSFORMS)
    return not scaled and model.get_output_embeddings() is not None


def add_lean_head(model: Any) -> None:
    """Make `model(..., labels=labels, lean_loss=True)` return (summed NLL over labelled positions, their count).

    It goes through the model's own forward, so wrappers (DDP, LoRA) see an ordinary forward call.
    """
    import torch.nn.functional as F

    original = model.forward

    @functools.wraps(type(model).forward)
    def forward(self: Any, *args: Any, lean_loss: bool = False, **kwargs: Any) -> Any:
        if not lean_loss:
            return original(*args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs.pop("num_items_in_batch", None)
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        # A frozen head (LoRA, prompt tuning) is packed or cast once, not at every step (28M weights on SmolLM2).
        logits = frozen_linear(self.get_output_embeddings(), hidden[keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), keep.sum()

    model.forward = types.MethodType(forward, model)


class LeanLossSFTTrainer(SFTTrainer):
    """SFTTrainer with the lean loss in training steps; evaluation and everything the lean loss does not
    cover (DFT loss, label smoothing, MoE auxiliary loss, soft prompts) take TRL's own path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        fuse_gelu(base)
        # PEFT's LoRA layers spend more on dropout, scaling and bf16 casts than the frozen base saves
        # (sft.training.fast_lora); the same function, cheaper.
        speed_up_lora(self.model)
        if self.args.padding_free:
            # Attention within each record of the packed row, not across the whole row (sft.training.packed_attention).
            use_packed_attention(base)
        prompt_learning = bool(getattr(getattr(self.model, "active_peft_config", None), "is_prompt_learning", False))
        self.lean_loss = lean_head_supported(base) and not prompt_learning
        if self.lean_loss:
            add_lean_head(base)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plain = (
            self.lean_loss
            and self.model.training
            and not return_outputs
            and self.args.loss_type == "nll"
            and self.compute_loss_func is None
            and self.label_smoother is None
            and not self.aux_loss_enabled
        )
        if not plain:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        summed, count = model(**inputs, use_cache=False, lean_loss=True)
        loss = summed / (count.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as SFTTrainer does
        self.count_tokens(inputs)
        return loss

    def count_tokens(self, inputs: dict[str, Any]) -> None:
        """The `num_tokens` log entry SFTTrainer keeps; a count, not a pass over the logits."""
        import torch

        if "attention_mask" in inputs:
            local = inputs["attention_mask"].sum()
        else:
            local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
        self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item() // self._tp_size
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
