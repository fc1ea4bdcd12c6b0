"""Stacking arrays of different sizes into one padded batch."""
import numpy as np


def stack_padded(arrays: list[np.ndarray], shape: tuple[int, ...], fill, dtype=None) -> np.ndarray:
    """``arrays`` stacked along a new first axis, each padded with ``fill`` at the end of its last ``len(shape)``
    axes to ``shape`` (leading axes must agree), as ``dtype`` (default: the first array's)."""
    out = np.full((len(arrays),) + arrays[0].shape[:-len(shape)] + tuple(shape), fill,
                  dtype=dtype or arrays[0].dtype)
    for index, array in enumerate(arrays):
        out[(index, Ellipsis) + tuple(slice(0, n) for n in array.shape[-len(shape):])] = array
    return out
