"""Training data: preprocessed cases, patch sampling, augmentation and the background batch pipeline."""
