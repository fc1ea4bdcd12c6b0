"""Every verification error names the case and the file, and nothing is written when one is found."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from boxunet.errors import BoxunetError, DatasetError
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import Geometry, read_image, write_image
from boxunet.io.input_cases import list_prediction_cases
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
from conftest import write_tiny_dataset


def run(dataset="1", **kwargs):
    options = PlanAndPreprocessOptions(progress=False, num_processes=1, gpu_memory_gb=1, **kwargs)
    return plan_and_preprocess(dataset, options)


def expect_problem(roots, case: str, file_part: str, message_part: str, **kwargs):
    with pytest.raises(DatasetError) as raised:
        run(**kwargs)
    matching = [p for p in raised.value.problems
                if p.case == case and file_part in p.file and message_part in p.message]
    assert matching, f"no problem for {case}/{file_part}/{message_part}: {raised.value.problems}"
    assert "nothing was written" in str(raised.value)
    assert not roots["preprocessed"].exists()
    return raised.value


def rewrite_image(path, transform):
    array, geometry = read_image(path)
    array, geometry = transform(array, geometry)
    write_image(array, geometry, path)


def test_clean_dataset_verifies_and_writes_nothing(tiny_dataset, roots):
    report = run(verify_only=True)
    assert report["cases"] == 4
    assert not roots["preprocessed"].exists()


@pytest.mark.parametrize("field, value, message", [
    ("spacing", (3.0, 0.9, 0.7), "spacing"),
    ("origin", (1.0, 2.0, 3.0), "origin"),
    ("direction", (1, 0, 0, 0, -1, 0, 0, 0, 1), "direction"),
])
def test_label_geometry_mismatch(tiny_dataset, roots, field, value, message):
    path = tiny_dataset / "labelsTr" / "case_001.nii.gz"
    rewrite_image(path, lambda a, g: (a, Geometry(**{**g.__dict__, field: value})))
    expect_problem(roots, "case_001", "labelsTr/case_001.nii.gz", message)


def test_label_size_mismatch(tiny_dataset, roots):
    path = tiny_dataset / "labelsTr" / "case_002.nii.gz"
    rewrite_image(path, lambda a, g: (a[:-1], Geometry(**{**g.__dict__, "shape": (g.shape[0] - 1,) + g.shape[1:]})))
    expect_problem(roots, "case_002", "labelsTr/case_002.nii.gz", "size")


def test_missing_channel(tiny_dataset, roots):
    data = json.loads((tiny_dataset / "dataset.json").read_text())
    data["channel_names"] = {"0": "CT", "1": "PET"}
    (tiny_dataset / "dataset.json").write_text(json.dumps(data))
    expect_problem(roots, "case_000", "case_000_0001.nii.gz", "missing")


def test_nan_voxels(roots):
    # SimpleITK's NIfTI reader returns NaN as 0, so this dataset is stored as MHA
    folder = write_tiny_dataset(roots["raw"], file_ending=".mha")
    path = folder / "imagesTr" / "case_003_0000.mha"

    def add_nan(array, geometry):
        array = array.astype(np.float32)
        array[0, 0, 0] = np.nan
        return array, geometry
    rewrite_image(path, add_nan)
    expect_problem(roots, "case_003", "case_003_0000.mha", "NaN")


def test_undeclared_label_value(tiny_dataset, roots):
    path = tiny_dataset / "labelsTr" / "case_000.nii.gz"

    def add_label(array, geometry):
        array = array.copy()
        array[0, 0, 0] = 7
        return array, geometry
    rewrite_image(path, add_label)
    expect_problem(roots, "case_000", "labelsTr/case_000.nii.gz", "[7]")


def test_non_integer_label(tiny_dataset, roots):
    path = tiny_dataset / "labelsTr" / "case_000.nii.gz"
    rewrite_image(path, lambda a, g: (a.astype(np.float32) + 0.5 * (a == 1), g))
    expect_problem(roots, "case_000", "labelsTr/case_000.nii.gz", "non-integer")


@pytest.mark.parametrize("box, message", [
    ({"label": 2, "min": [0, 0, 0], "max": [13, 5, 5]}, "outside the image"),
    ({"label": 2, "min": [-1, 0, 0], "max": [3, 5, 5]}, "outside the image"),
    ({"label": 2, "min": [4, 9, 5], "max": [3, 10, 7]}, "inverted"),
    ({"label": 2, "min": [4, 9, 5], "max": [4, 10, 7]}, "empty"),
    ({"label": 1, "min": [1, 1, 1], "max": [3, 3, 3]}, "box_labels"),
    ({"label": 2, "min": [1, 1], "max": [3, 3]}, "3 int min and max"),
])
def test_bad_boxes(tiny_dataset, roots, box, message):
    (tiny_dataset / "boxesTr" / "case_001.json").write_text(json.dumps({"boxes": [box]}))
    expect_problem(roots, "case_001", "boxesTr/case_001.json", message)


def test_box_file_not_json(tiny_dataset, roots):
    (tiny_dataset / "boxesTr" / "case_001.json").write_text("{boxes: ")
    expect_problem(roots, "case_001", "boxesTr/case_001.json", "not valid JSON")


def test_missing_box_file(tiny_dataset, roots):
    (tiny_dataset / "boxesTr" / "case_002.json").unlink()
    expect_problem(roots, "case_002", "boxesTr/case_002.json", "missing")


def test_missing_label_file(tiny_dataset, roots):
    (tiny_dataset / "labelsTr" / "case_002.nii.gz").unlink()
    expect_problem(roots, "case_002", "labelsTr/case_002.nii.gz", "missing")


def test_unsafe_case_id(tiny_dataset, roots):
    images = tiny_dataset / "imagesTr"
    (images / "case_000_0000.nii.gz").rename(images / "case 000_0000.nii.gz")
    expect_problem(roots, "case 000", "case 000_0000.nii.gz", "not safe")


def test_case_ids_differing_only_by_case(tiny_dataset, roots):
    for sub, name in (("imagesTr", "CASE_001_0000.nii.gz"), ("labelsTr", "CASE_001.nii.gz")):
        (tiny_dataset / sub / name).write_bytes((tiny_dataset / sub / name.lower()).read_bytes())
    (tiny_dataset / "boxesTr" / "CASE_001.json").write_text('{"boxes": []}')
    expect_problem(roots, "case_001", "case_001_0000.nii.gz", "not unique")


def test_corrupt_image_file(tiny_dataset, roots):
    (tiny_dataset / "imagesTr" / "case_003_0000.nii.gz").write_bytes(b"this is not an image")
    expect_problem(roots, "case_003", "case_003_0000.nii.gz", "cannot be read")


@pytest.mark.parametrize("verify_only", [True, False])
def test_truncated_image_file(tiny_dataset, roots, verify_only):
    path = tiny_dataset / "imagesTr" / "case_002_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])  # SimpleITK would read zeros
    expect_problem(roots, "case_002", "case_002_0000.nii.gz", "is truncated", verify_only=verify_only)


def test_truncated_input_is_refused_before_prediction(tiny_dataset, tmp_path):
    folder = tmp_path / "input"
    shutil.copytree(tiny_dataset / "imagesTr", folder)
    path = folder / "case_001_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(DatasetError) as raised:
        list_prediction_cases(folder, load_dataset_json(tiny_dataset))
    assert [(p.case, Path(p.file).name) for p in raised.value.problems] == [("case_001", "case_001_0000.nii.gz")]
    assert "is truncated" in raised.value.problems[0].message


def test_label_without_image_and_count_mismatch(tiny_dataset, roots):
    (tiny_dataset / "labelsTr" / "case_009.nii.gz").write_bytes((tiny_dataset / "labelsTr" / "case_000.nii.gz").read_bytes())
    (tiny_dataset / "imagesTr" / "case_003_0000.nii.gz").unlink()
    error = expect_problem(roots, "case_009", "labelsTr/case_009.nii.gz", "no image")
    assert any("numTraining is 4" in p.message for p in error.problems)


def test_four_dimensional_image_is_refused(tiny_dataset, roots):
    image = sitk.Image([4, 5, 6, 2], sitk.sitkInt16)
    sitk.WriteImage(image, str(tiny_dataset / "imagesTr" / "case_000_0000.nii.gz"))
    expect_problem(roots, "case_000", "case_000_0000.nii.gz", "4D")


def test_all_problems_are_reported_together(tiny_dataset, roots):
    (tiny_dataset / "labelsTr" / "case_002.nii.gz").unlink()
    (tiny_dataset / "boxesTr" / "case_001.json").write_text(json.dumps({"boxes": [{"label": 2, "min": [0, 0, 0], "max": [99, 1, 1]}]}))
    with pytest.raises(DatasetError) as raised:
        run()
    assert {p.case for p in raised.value.problems} == {"case_001", "case_002"}


@pytest.mark.parametrize("change, message", [
    ({"labels": {"background": 0, "tumor": 2}}, "consecutive"),
    ({"file_ending": "nii.gz"}, "file_ending"),
    ({"file_ending": "./../../../ESCAPED.nii.gz"}, "plain file ending"),
    ({"box_labels": [5]}, "box_labels"),
    ({"labels": {"background": 0, "kidney": [1, 2], "tumor": 2}}, "regions_class_order"),
])
def test_bad_dataset_json(tiny_dataset, roots, change, message):
    data = json.loads((tiny_dataset / "dataset.json").read_text())
    data.update(change)
    (tiny_dataset / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(BoxunetError, match=message) as raised:
        run()
    assert "dataset.json" in str(raised.value)
    assert not roots["preprocessed"].exists()


def test_unknown_dataset_and_configuration(tiny_dataset, roots):
    with pytest.raises(BoxunetError, match="no folder Dataset007_"):
        run("7")
    with pytest.raises(BoxunetError, match="unknown configuration"):
        run(configurations=["3d_superres"])
    assert not roots["preprocessed"].exists()
