"""Synthetic abdominal CT phantom: body, spine, vessels, organs, kidneys with tumors and cysts.

Shapes are drawn in millimetres in a patient frame centred on the body: +x patient left, +y posterior,
+z cranial (LPS, the frame of an identity-direction image). HU values are painted in anatomical order
onto a float canvas that is then blurred, given correlated noise and stored as int16. Every anatomical
part draws from its own random stream, so switching cysts off leaves the rest of a case unchanged.
"""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from boxunet.io.images import Geometry

KIDNEY, TUMOR, CYST = 1, 2, 3
MIN_SIZE_SCALE, MAX_SIZE_SCALE = 0.25, 2.0
SLICE_SPACINGS_MM = (2.5, 3.0, 3.75, 4.0, 5.0)
FLIPPED_AXES = ((False, True, False), (True, True, False), (False, False, True))  # (x, y, z)
_STREAMS = ("geometry", "body", "organs", "kidneys", "cysts", "tumors", "image")
_FAR = 1e6  # a half-width in mm that covers the whole volume


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def sample_geometry(seed: int, size_scale: float = 1.0) -> Geometry:
    """The geometry of case ``seed``: anisotropic spacing, varying size, random origin, a few flipped axes.

    ``size_scale`` scales the voxel counts at constant physical extent (the spacings grow as it shrinks).
    """
    if not MIN_SIZE_SCALE <= size_scale <= MAX_SIZE_SCALE:
        raise ValueError(f"size_scale must be in [{MIN_SIZE_SCALE}, {MAX_SIZE_SCALE}], got {size_scale}")
    rng = _streams(seed)["geometry"]
    ny = int(rng.integers(170, 211))
    nx = ny if rng.random() < 0.5 else int(rng.integers(170, 211))
    in_plane = rng.uniform(1.5, 2.2)
    slice_spacing = float(rng.choice(SLICE_SPACINGS_MM))
    extent_xyz = (nx * in_plane, ny * in_plane, rng.uniform(200.0, 320.0))
    counts_xyz = [max(1, round(nx * size_scale)), max(1, round(ny * size_scale)),
                  max(1, round(extent_xyz[2] / slice_spacing * size_scale))]
    spacing_xyz = [extent / count for extent, count in zip(extent_xyz, counts_xyz)]
    flips = FLIPPED_AXES[rng.integers(len(FLIPPED_AXES))] if rng.random() < 0.15 else (False, False, False)
    origin = [rng.uniform(-250.0, -150.0), rng.uniform(-250.0, -150.0), rng.uniform(-600.0, 0.0)]
    for axis, flipped in enumerate(flips):  # a flipped axis stores the same physical volume backwards
        if flipped:
            origin[axis] += (counts_xyz[axis] - 1) * spacing_xyz[axis]
    direction = np.diag([-1.0 if flipped else 1.0 for flipped in flips]).ravel()
    return Geometry(tuple(spacing_xyz[::-1]), tuple(origin), tuple(float(d) for d in direction), tuple(counts_xyz[::-1]))


