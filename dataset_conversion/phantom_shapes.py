"""Drawing primitives of the CT phantom: a canvas in patient millimetres, perturbed ellipsoids, tubes,
capsules and smooth random fields."""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FAR = 1e6  # a half-width in mm that covers the whole volume


class Canvas:
    """The float HU volume and label map being painted, with voxel-centre coordinates in the patient frame."""

    def __init__(self, spacing: tuple[float, ...], body_offset: tuple[float, float], texture: np.ndarray):
        shape = texture.shape
        self.count = shape[::-1]  # (x, y, z)
        self.step = spacing[::-1]
        offset = (body_offset[0], body_offset[1], 0.0)
        self.start = tuple(-(n - 1) / 2 * d - o for n, d, o in zip(self.count, self.step, offset))
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(shape, dtype=np.uint8)
        self.protected = np.zeros(shape, dtype=bool)  # bone, canal and great vessels: kidneys never overwrite them
        self.cavity = np.zeros(shape, dtype=bool)  # inside the abdominal wall
        self.texture = texture  # unit-variance fine tissue texture

    @property
    def extent(self) -> tuple[float, ...]:
        """Physical size (x, y, z) in mm."""
        return tuple(n * d for n, d in zip(self.count, self.step))

    def window(self, center, half):
        """Slices (z, y, x) of the voxels within ``half`` mm of ``center`` on each axis and their (x, y, z)
        offsets from it, each shaped to broadcast; None when the window misses the volume."""
        bounds = []
        for axis in range(3):
            low = (center[axis] - half[axis] - self.start[axis]) / self.step[axis]
            high = (center[axis] + half[axis] - self.start[axis]) / self.step[axis]
            low, high = max(0, int(np.ceil(low))), min(self.count[axis], int(np.floor(high)) + 1)
            if low >= high:
                return None
            bounds.append((low, high))
        offsets = []
        for axis, (low, high) in enumerate(bounds):
            shape = [1, 1, 1]
            shape[2 - axis] = high - low
            values = self.start[axis] + self.step[axis] * np.arange(low, high) - center[axis]
            offsets.append(values.astype(np.float32).reshape(shape))
        return tuple(slice(*bounds[axis]) for axis in (2, 1, 0)), offsets

    def index_of(self, point) -> tuple[int, ...]:
        """The (z, y, x) index of the voxel nearest to ``point`` (x, y, z), clipped to the volume."""
        index = [int(np.clip(round((p - s) / d), 0, n - 1))
                 for p, s, d, n in zip(point, self.start, self.step, self.count)]
        return tuple(index[::-1])

    def paint(self, slices, mask, value, label: int | None = None) -> None:
        """Set HU ``value`` (a number or a window-shaped array) and optionally ``label`` where ``mask`` holds."""
        region = self.hu[slices]
        mask = np.broadcast_to(mask, region.shape)
        region[mask] = value if np.ndim(value) == 0 else np.broadcast_to(value, region.shape)[mask]
        if label is not None:
            self.label[slices][mask] = label

    def tissue(self, slices, mean: float, texture: float):
        """HU of a textured tissue in a window: ``mean`` plus ``texture`` HU of the fine texture field."""
        return mean + texture * self.texture[slices]


def smooth_noise(rng: np.random.Generator, shape, spacing, sigma_mm: float) -> np.ndarray:
    """A unit-variance Gaussian random field correlated over about ``sigma_mm``, made on a coarse grid."""
    factor = np.maximum(1.0, np.floor(sigma_mm / np.asarray(spacing)))
    coarse_shape = tuple(int(np.ceil(n / f)) + 2 for n, f in zip(shape, factor))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), 1.0)
    field = ndimage.zoom(field, [n / c for n, c in zip(shape, coarse_shape)], order=1)
    return (field - field.mean()) / (field.std() + 1e-6)


@dataclass
class Blob:
    """A perturbed ellipsoid in a window: local coordinates ``u`` in radii, normalised ``radius`` (< 1 inside)."""

    slices: tuple[slice, ...]
    offsets: list[np.ndarray]
    u: list[np.ndarray]
    radius: np.ndarray

    @property
    def inside(self) -> np.ndarray:
        return self.radius < 1.0

    def depth_mm(self) -> np.ndarray:
        """Approximate distance in mm below the surface, measured along the ray from the centre."""
        distance = np.sqrt(sum(o * o for o in self.offsets))
        return (1.0 - self.radius) * distance / np.maximum(self.radius, 1e-3)


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random direction."""
    vector = rng.standard_normal(3)
    return vector / np.linalg.norm(vector)


def blob(canvas: Canvas, rng: np.random.Generator, center, radii, rotation, roughness: float) -> Blob | None:
    """A rotated ellipsoid (``rotation`` columns = its axes in the patient frame) whose surface is moved
    in and out by up to ``roughness`` (fraction of the radius) with a smooth random function of direction."""
    terms = [(unit_vector(rng), rng.uniform(1.0, 2.5), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0))
             for _ in range(4)]
    window = canvas.window(center, [max(radii) * (1 + roughness)] * 3)
    if window is None:
        return None
    slices, offsets = window
    u = [sum(rotation[j, k] * offsets[j] for j in range(3)) / radii[k] for k in range(3)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    cosine_scale = 1.0 / np.maximum(rho, 1e-6)
    total = sum(term[3] for term in terms)
    surface = 1.0
    for vector, frequency, phase, weight in terms:
        cosine = (vector[0] * u[0] + vector[1] * u[1] + vector[2] * u[2]) * cosine_scale
        surface = surface + roughness * weight / total * np.sin(frequency * np.pi * cosine + phase)
    return Blob(slices, offsets, u, rho / surface)


def tube(canvas: Canvas, center, radii, slope=(0.0, 0.0), taper: float = 0.0):
    """Window and mask of an elliptic cylinder along z through ``center`` whose axis drifts by ``slope`` mm/mm
    and whose radii scale by ``1 - taper * (z - center z)``."""
    reach = 1.5 * np.asarray(radii) + np.abs(slope) * FAR  # the taper scales radii by at most 1.5
    window = canvas.window(center, (reach[0], reach[1], FAR))
    if window is None:
        return None, None
    slices, (dx, dy, dz) = window
    scale = np.clip(1.0 - taper * dz, 0.3, 1.5)
    mask = ((dx - slope[0] * dz) / (radii[0] * scale)) ** 2 + ((dy - slope[1] * dz) / (radii[1] * scale)) ** 2 < 1
    return slices, mask


def capsule(canvas: Canvas, start, end, radius: float):
    """Window and mask of the voxels within ``radius`` mm of the segment ``start``-``end``."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    middle, axis = (start + end) / 2, end - start
    window = canvas.window(middle, np.abs(axis) / 2 + radius)
    if window is None:
        return None, None
    slices, offsets = window
    relative = [o + (middle[k] - start[k]) for k, o in enumerate(offsets)]
    t = np.clip(sum(r * a for r, a in zip(relative, axis)) / max(float(axis @ axis), 1e-6), 0, 1)
    return slices, sum((r - t * a) ** 2 for r, a in zip(relative, axis)) < radius ** 2


def rotation_z(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the z axis."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q
