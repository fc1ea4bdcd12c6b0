"""Evaluation: per-label and per-region overlap metrics of predicted label maps against references."""
