"""Is a NIfTI file whole? SimpleITK reads a truncated .nii or .nii.gz without complaint, the missing voxels
as zeros (NRRD and MetaImage readers raise). The header says how many bytes the file must hold: ``vox_offset``
plus the voxels (the product of ``dim`` times ``bitpix`` / 8).

A .nii is whole when the file is at least that long. A .nii.gz is checked cheaply first: the gzip trailer's
ISIZE (the uncompressed size modulo 2^32) must equal that size, as it does for every file written in one piece
(a truncated file ends in compressed data, which matches by chance once in 2^32); only when it does not is the
whole stream decompressed, its members counted and its end marker required (multi-member or padded files).
"""
import gzip
import math
import struct
import zlib
from pathlib import Path

from boxunet.errors import BoxunetError

NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES = 348, 540
CHUNK_BYTES = 1 << 20


def _expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel bytes from the start of a NIfTI-1 or NIfTI-2 header (either byte order); None when the
    bytes are not such a header (the reader then reports the file)."""
    for order in "<>":
        if len(header) >= NIFTI1_HEADER_BYTES and struct.unpack(order + "i", header[:4])[0] == NIFTI1_HEADER_BYTES:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            header_bytes = NIFTI1_HEADER_BYTES
        elif len(header) >= NIFTI2_HEADER_BYTES and struct.unpack(order + "i", header[:4])[0] == NIFTI2_HEADER_BYTES:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            header_bytes = NIFTI2_HEADER_BYTES
        else:
            continue
        if not 0 < dims[0] <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1:dims[0] + 1]):
            return None
        return max(offset, header_bytes) + math.prod(dims[1:dims[0] + 1]) * bitpix // 8
    return None


def _decompressed_size(path: Path) -> int | None:
    """The bytes of every gzip member of ``path``; None when the stream ends before its end marker."""
    total, decompressor = 0, zlib.decompressobj(wbits=31)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            while chunk:
                total += len(decompressor.decompress(chunk))
                if not decompressor.eof:
                    break
                chunk = decompressor.unused_data.lstrip(b"\0")  # the next member (or zero padding)
                if chunk:
                    decompressor = zlib.decompressobj(wbits=31)
    return total if decompressor.eof else None


def nifti_problem(path: Path) -> str | None:
    """Why the NIfTI file ``path`` (.nii or .nii.gz) is not whole, or None (also for other files)."""
    name = Path(path).name.lower()
    compressed = name.endswith(".nii.gz")
    if not (compressed or name.endswith(".nii")):
        return None
    try:
        if not compressed:
            with open(path, "rb") as stream:
                expected = _expected_bytes(stream.read(NIFTI2_HEADER_BYTES))
            actual = Path(path).stat().st_size
            if expected is not None and actual < expected:
                return f"is truncated: {actual} bytes, its header announces {expected}"
            return None
        with gzip.open(path, "rb") as stream:
            expected = _expected_bytes(stream.read(NIFTI2_HEADER_BYTES))
        if expected is None:
            return None
        with open(path, "rb") as stream:
            stream.seek(-4, 2)
            trailer = struct.unpack("<I", stream.read(4))[0]
        if trailer == expected % 2 ** 32:
            return None
        actual = _decompressed_size(path)
    except gzip.BadGzipFile:
        return None  # not gzip at all: the image reader says it cannot read it
    except (OSError, EOFError, zlib.error, struct.error):
        return "is not a readable gzip stream (truncated or corrupt)"
    if actual is None:
        return "is truncated: its gzip stream ends before its end marker"
    if actual < expected:
        return f"is truncated: {actual} bytes uncompressed, its header announces {expected}"
    return None


def check_nifti_whole(path: Path) -> None:
    """Raise a BoxunetError naming ``path`` when it is a NIfTI file that is not whole (``nifti_problem``)."""
    problem = nifti_problem(path)
    if problem:
        raise BoxunetError(f"file {path}: {problem}")
