"""Truncated NIfTI files are refused by every image reader, naming the file (SimpleITK reads them with zeros)."""
import gzip

import numpy as np
import pytest

from boxunet.errors import BoxunetError
from boxunet.io.images import Geometry, read_channels, read_geometry, read_image, write_image
from boxunet.io.nifti_integrity import nifti_problem


def _write(path, shape=(4, 5, 6)):
    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    write_image(array, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), shape), path,
                compress=path.name.endswith(".gz"))
    return array


def test_whole_files_pass(tmp_path):
    for name in ("whole.nii.gz", "whole.nii", "whole.nrrd"):
        array = _write(tmp_path / name)
        assert nifti_problem(tmp_path / name) is None
        assert np.array_equal(read_image(tmp_path / name)[0], array)


def test_a_truncated_nii_gz_is_refused_by_every_reader(tmp_path):
    path = tmp_path / "case_001_0000.nii.gz"
    _write(path, (20, 30, 40))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    for reader in (read_image, read_geometry, lambda p: read_channels([p])):
        with pytest.raises(BoxunetError, match=r"case_001_0000\.nii\.gz: is truncated: its gzip stream ends"):
            reader(path)
    path.write_bytes(data[:100])  # inside the header
    with pytest.raises(BoxunetError, match="not a readable gzip stream"):
        read_image(path)


def test_a_truncated_nii_is_refused_with_its_sizes(tmp_path):
    path = tmp_path / "case.nii"
    _write(path)  # 4 x 5 x 6 int16: 240 bytes after the 352-byte header
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(BoxunetError, match="case.nii: is truncated: 400 bytes, its header announces 592"):
        read_image(path)


def test_a_multi_member_gzip_is_decompressed_whole(tmp_path):
    plain = tmp_path / "plain.nii"
    array = _write(plain)
    data = plain.read_bytes()
    split = tmp_path / "split.nii.gz"
    split.write_bytes(gzip.compress(data[:300]) + gzip.compress(data[300:]))  # the trailer holds 292, not 592
    assert nifti_problem(split) is None and np.array_equal(read_image(split)[0], array)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(data[:300]) + gzip.compress(data[300:500]))  # whole members, missing voxels
    assert nifti_problem(short) == "is truncated: 500 bytes uncompressed, its header announces 592"
