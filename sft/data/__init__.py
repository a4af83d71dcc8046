"""Instruction data: loading, validation, splits, prompt rendering and tokenization."""
