"""Inference: generation settings, batched generation and interactive chat."""
