"""Experiment planning: target spacing, network topology, patch and batch size, normalization, plans JSON."""
