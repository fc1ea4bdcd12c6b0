"""Inference: sliding-window prediction with Gaussian weighting and mirroring, and export of predictions
back to the geometry of the raw images."""
