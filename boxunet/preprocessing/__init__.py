"""Preprocessing: transpose, crop to nonzero, normalize, resample, store per case."""
