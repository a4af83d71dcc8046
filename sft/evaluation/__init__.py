"""Evaluation: metrics, scoring a responses file, evaluating and comparing models, and reports."""
