"""Image I/O through SimpleITK with the full geometry kept beside the array.

Arrays are numpy in (z, y, x) order as SimpleITK's GetArrayFromImage gives them; ``Geometry.spacing``
follows the same axis order. Origin and direction stay in SimpleITK's physical (x, y, z) convention so
that a written image has exactly the geometry of the image it came from. 2D images are read as arrays
of shape (1, y, x) and written back as 2D images.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from boxunet.errors import BoxunetError
from boxunet.io.nifti_integrity import check_nifti_whole

GEOMETRY_TOLERANCE = 1e-4
SPACING_OF_MISSING_AXIS = 999.0


@dataclass(frozen=True)
class Geometry:
    """Where an image lies in physical space."""

    spacing: tuple[float, ...]  # array axis order (z, y, x)
    origin: tuple[float, ...]  # SimpleITK order (x, y, z)
    direction: tuple[float, ...]  # SimpleITK row-major direction cosines
    shape: tuple[int, ...]  # array shape (z, y, x)
    is_2d: bool = False

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction),
                "shape": list(self.shape), "is_2d": self.is_2d}

    @classmethod
    def from_json(cls, data: dict) -> "Geometry":
        return cls(tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]),
                   tuple(data["shape"]), bool(data.get("is_2d", False)))

    def mismatch(self, other: "Geometry", tolerance: float = GEOMETRY_TOLERANCE) -> str | None:
        """Describe how ``other`` differs from this geometry, or return None when they agree."""
        if self.shape != other.shape:
            return f"size {list(other.shape)} differs from {list(self.shape)}"
        for name in ("spacing", "origin", "direction"):
            mine, theirs = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            scale = np.maximum(1.0, np.abs(mine))
            if mine.shape != theirs.shape or np.any(np.abs(mine - theirs) > tolerance * scale):
                return f"{name} {np.round(theirs, 5).tolist()} differs from {np.round(mine, 5).tolist()}"
        return None


def axis_codes(direction: tuple[float, ...]) -> list[int]:
    """Which way each image axis (SimpleITK order) points: ``(k + 1) * sign`` of the world axis ``k`` closest to
    it, e.g. [1, 2, 3] for the identity and [-1, -2, 3] for the same image flipped in x and y."""
    size = int(round(len(direction) ** 0.5))
    matrix = np.asarray(direction, dtype=np.float64).reshape(size, size)
    codes = []
    for axis in range(size):
        world = int(np.argmax(np.abs(matrix[:, axis])))
        codes.append((world + 1) * (1 if matrix[world, axis] > 0 else -1))
    return codes


def _geometry_of(image_or_reader, size: tuple[int, ...]) -> Geometry:
    spacing = tuple(float(s) for s in image_or_reader.GetSpacing())
    origin = tuple(float(o) for o in image_or_reader.GetOrigin())
    direction = tuple(float(d) for d in image_or_reader.GetDirection())
    if len(size) == 2:
        return Geometry((SPACING_OF_MISSING_AXIS,) + spacing[::-1], origin, direction, (1,) + tuple(size[::-1]), True)
    return Geometry(spacing[::-1], origin, direction, tuple(size[::-1]))


def read_geometry(path: Path) -> Geometry:
    """Read only the header of an image file (cheap) and return its geometry."""
    check_nifti_whole(path)  # SimpleITK reads a truncated NIfTI with zeros for its missing voxels
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise BoxunetError(f"file {path}: cannot be read as an image ({_first_line(error)})") from None
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetNumberOfComponents() != 1:
        raise BoxunetError(f"file {path}: has {reader.GetNumberOfComponents()} components per voxel; "
                           "boxunet expects one file per channel with scalar voxels")
    if len(size) not in (2, 3):
        raise BoxunetError(f"file {path}: is {len(size)}D; boxunet reads 2D and 3D images "
                           "(split 4D images into channels, e.g. with boxunet_convert_msd)")
    return _geometry_of(reader, size)


def read_image(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a 2D or 3D scalar image; return a (z, y, x) array and its geometry."""
    check_nifti_whole(path)  # SimpleITK reads a truncated NIfTI with zeros for its missing voxels
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise BoxunetError(f"file {path}: cannot be read as an image ({_first_line(error)})") from None
    return image_to_array(image, f"file {path}")


def image_to_array(image: sitk.Image, name: str = "image") -> tuple[np.ndarray, Geometry]:
    """A 2D or 3D scalar SimpleITK image held in memory as a (z, y, x) array and its geometry; ``name`` says in an
    error which image it is."""
    if not isinstance(image, sitk.Image):
        raise BoxunetError(f"{name}: is a {type(image).__name__}, not a SimpleITK.Image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BoxunetError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                           "boxunet expects one image per channel with scalar voxels")
    if image.GetDimension() not in (2, 3):
        raise BoxunetError(f"{name}: is {image.GetDimension()}D; boxunet reads 2D and 3D images")
    array = sitk.GetArrayFromImage(image)
    geometry = _geometry_of(image, tuple(image.GetSize()))
    return array.reshape(geometry.shape), geometry


def read_channels(paths: list[Path]) -> tuple[np.ndarray, Geometry]:
    """Read one file per channel into a (c, z, y, x) array of the files' common dtype.

    The geometry is the first channel's; a channel whose geometry differs raises an error naming it.
    """
    first, geometry = read_image(paths[0])
    if len(paths) == 1:
        return first[None], geometry
    channels = [first]
    for index, path in enumerate(paths[1:], start=1):
        channel, channel_geometry = read_image(path)
        difference = geometry.mismatch(channel_geometry)
        if difference:
            raise BoxunetError(f"file {path}: channel {index} {difference} (channel 0: {paths[0]})")
        channels.append(channel)
    return np.stack(channels), geometry


def array_to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A (z, y, x) array as a SimpleITK image with ``geometry`` (2D when the geometry is)."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    image = sitk.GetImageFromArray(array[0] if geometry.is_2d else array)
    spacing = geometry.spacing[1:] if geometry.is_2d else geometry.spacing
    image.SetSpacing([float(s) for s in spacing[::-1]])
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def write_image(array: np.ndarray, geometry: Geometry, path: Path, compress: bool = True) -> None:
    """Write a (z, y, x) array with ``geometry``; atomic (temporary file, then rename)."""
    image = array_to_image(array, geometry)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp_{os.getpid()}_{path.name}")
    sitk.WriteImage(image, str(temporary), compress)
    os.replace(temporary, path)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
