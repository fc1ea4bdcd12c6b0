"""Cross-validation summaries, model selection (single models and ensembles) and its postprocessing."""
