"""Dataset fingerprint on two hand-made cases whose statistics are worked out by hand."""
import json

import numpy as np
import pytest

from boxunet.errors import DatasetError
from boxunet.fingerprint import extract_fingerprint, fingerprint_matches
from boxunet.io.boxes import Box, write_boxes
from boxunet.io.cases import list_training_cases
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import Geometry, read_image, write_image
from conftest import make_case_arrays, write_tiny_dataset

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# Case 000: shape (6, 10, 12), spacing (2.5, 0.75, 1.0) -> 1.875 mm^3 = 0.001875 ml per voxel.
#   body [1:5, 2:8, 3:10] = 10 (the nonzero region -> shape after crop (4, 6, 7), 168 of 720 voxels)
#   organ (label 1) [2:4, 3:5, 4:6]: 8 voxels of 50, one of them 77  -> 0.015 ml
#   box (label 2) [1:3, 5:8, 6:9]: 18 voxels of 20, one of them -5    -> 0.03375 ml, 5.0 x 2.25 x 3.0 mm
#   outside the foreground but inside the body: 1000 and -500 (must not count)
# Case 001: shape (5, 8, 8), spacing (2.0, 0.5, 1.25) -> 1.25 mm^3 = 0.00125 ml per voxel.
#   body [0:5, 1:7, 2:6] = 10 -> shape after crop (5, 6, 4), 120 of 320 voxels
#   organ [1:4, 2:4, 3:4]: 6 voxels of 60, one of them -20              -> 0.0075 ml
#   boxes [0:2, 1:3, 4:6] (4.0 x 1.0 x 2.5 mm) and [3:5, 4:7, 4:6] (4.0 x 1.5 x 2.5 mm), 20 voxels of 15
#   -> 0.025 ml; 5000 inside the body outside the foreground
CASE0_SPACING, CASE1_SPACING = (2.5, 0.75, 1.0), (2.0, 0.5, 1.25)


def _case0():
    image = np.zeros((6, 10, 12), np.float32)
    image[1:5, 2:8, 3:10] = 10
    label = np.zeros(image.shape, np.uint8)
    label[2:4, 3:5, 4:6] = 1
    image[2:4, 3:5, 4:6] = 50
    image[2, 3, 4] = 77
    image[1:3, 5:8, 6:9] = 20
    image[1, 7, 8] = -5
    label[1:3, 6:7, 7:8] = 2  # lesion voxels inside its box
    image[4, 2, 3] = 1000
    image[1, 2, 3] = -500
    return image, label, [Box(2, (1, 5, 6), (3, 8, 9))]


def _case1():
    image = np.zeros((5, 8, 8), np.float32)
    image[0:5, 1:7, 2:6] = 10
    label = np.zeros(image.shape, np.uint8)
    label[1:4, 2:4, 3:4] = 1
    image[1:4, 2:4, 3:4] = 60
    image[1, 2, 3] = -20
    image[0:2, 1:3, 4:6] = 15
    image[3:5, 4:7, 4:6] = 15
    image[2, 6, 2] = 5000
    return image, label, [Box(2, (0, 1, 4), (2, 3, 6)), Box(2, (3, 4, 4), (5, 7, 6))]


def _write_dataset(root, cases, ending=".nii.gz"):
    folder = root / "Dataset900_Hand"
    for sub in ("imagesTr", "labelsTr", "boxesTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index, ((image, label, boxes), spacing) in enumerate(cases):
        geometry = Geometry(spacing, (0.0, 0.0, 0.0), IDENTITY, image.shape)
        write_image(image, geometry, folder / "imagesTr" / f"case_{index:03d}_0000{ending}")
        write_image(label, geometry, folder / "labelsTr" / f"case_{index:03d}{ending}")
        write_boxes(boxes, folder / "boxesTr" / f"case_{index:03d}.json")
    description = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
                   "box_labels": [2], "numTraining": len(cases), "file_ending": ending}
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def _fingerprint(folder):
    description = load_dataset_json(folder)
    cases, problems = list_training_cases(folder, description)
    assert problems == []
    return extract_fingerprint(cases, description, num_processes=1, progress=False), cases


@pytest.fixture(scope="module")
def hand_dataset(tmp_path_factory):
    folder = _write_dataset(tmp_path_factory.mktemp("raw"), [(_case0(), CASE0_SPACING), (_case1(), CASE1_SPACING)])
    return folder, *_fingerprint(folder)


def test_geometry_and_crop_shapes(hand_dataset):
    _, fingerprint, cases = hand_dataset
    assert fingerprint["case_ids"] == ["case_000", "case_001"]
    assert fingerprint_matches(fingerprint, cases, load_dataset_json(hand_dataset[0]))
    assert fingerprint["spacings"] == [[2.5, 0.75, 1.0], [2.0, 0.5, 1.25]]
    assert fingerprint["shapes_before_crop"] == [[6, 10, 12], [5, 8, 8]]
    assert fingerprint["shapes_after_crop"] == [[4, 6, 7], [5, 6, 4]]
    # median of 168 / 720 and 120 / 320
    assert fingerprint["median_relative_size_after_cropping"] == pytest.approx((168 / 720 + 120 / 320) / 2)
    assert fingerprint["foreground_definition"] == "dense labels and box interiors"


def test_per_case_values(hand_dataset):
    _, fingerprint, _ = hand_dataset
    case0, case1 = fingerprint["cases"]["case_000"], fingerprint["cases"]["case_001"]
    assert case0["foreground_voxels"] == 8 + 18 and case1["foreground_voxels"] == 6 + 8 + 12
    assert case0["class_volumes_ml"] == pytest.approx({"1": 8 * 1.875 / 1000, "2": 18 * 1.875 / 1000})
    assert case1["class_volumes_ml"] == pytest.approx({"1": 6 * 1.25 / 1000, "2": 20 * 1.25 / 1000})
    assert case0["box_sizes_mm"] == {"2": [pytest.approx([5.0, 2.25, 3.0])]}
    assert case1["box_sizes_mm"]["2"] == [pytest.approx([4.0, 1.0, 2.5]), pytest.approx([4.0, 1.5, 2.5])]


def test_foreground_intensities(hand_dataset):
    _, fingerprint, _ = hand_dataset
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    # exact extremes over every foreground voxel (1000, -500 and 5000 are outside the foreground)
    assert stats["min"] == -20.0 and stats["max"] == 77.0
    # both cases have 26 foreground voxels and get the same number of samples, so the samples follow
    # the 52 values -20 (1), -5 (1), 15 (20), 20 (17), 50 (7), 60 (5), 77 (1):
    # median 20 (the 26th value), 0.5% -> -20 and 99.5% -> 77 (each end value holds 1/52 = 1.9%)
    assert stats["median"] == 20.0
    assert stats["percentile_00_5"] == -20.0 and stats["percentile_99_5"] == 77.0
    # mean 1342 / 52 = 25.81, std sqrt(53154 / 52 - 25.81^2) = 18.87 (up to sampling noise)
    assert stats["mean"] == pytest.approx(1342 / 52, abs=0.1)
    assert stats["std"] == pytest.approx(np.sqrt(53154 / 52 - (1342 / 52) ** 2), abs=0.1)


def test_class_volume_statistics(hand_dataset):
    _, fingerprint, _ = hand_dataset
    organ, lesion = fingerprint["class_volume_ml"]["1"], fingerprint["class_volume_ml"]["2"]
    assert organ["n"] == 2
    assert organ["min"] == pytest.approx(0.0075) and organ["max"] == pytest.approx(0.015)
    assert organ["mean"] == pytest.approx(0.01125) and organ["median"] == pytest.approx(0.01125)
    assert lesion["min"] == pytest.approx(0.025) and lesion["max"] == pytest.approx(0.03375)
    assert lesion["mean"] == pytest.approx(0.029375)


def test_box_statistics(hand_dataset):
    _, fingerprint, _ = hand_dataset
    boxes = fingerprint["box_statistics"]["2"]
    assert boxes["box_count"] == 3
    assert boxes["cases_without_boxes"] == 0
    assert boxes["boxes_per_case"] == pytest.approx({"n": 2, "mean": 1.5, "median": 1.5, "std": 0.5,
                                                     "min": 1.0, "max": 2.0})
    z, y, x = boxes["size_mm_per_axis"]
    # sizes (5.0, 2.25, 3.0), (4.0, 1.0, 2.5), (4.0, 1.5, 2.5)
    assert (z["n"], z["min"], z["median"], z["max"]) == (3, 4.0, 4.0, 5.0)
    assert z["mean"] == pytest.approx(13 / 3)
    assert (y["min"], y["median"], y["max"]) == pytest.approx((1.0, 1.5, 2.25))
    assert (x["min"], x["median"], x["max"]) == pytest.approx((2.5, 2.5, 3.0))


def test_fingerprint_is_json_serializable(hand_dataset):
    _, fingerprint, _ = hand_dataset
    assert json.loads(json.dumps(fingerprint)) == fingerprint


def test_case_without_boxes(tmp_path):
    image, label, _ = _case1()
    folder = _write_dataset(tmp_path, [(_case0(), CASE0_SPACING), ((image, label, []), CASE1_SPACING)])
    fingerprint, _ = _fingerprint(folder)
    boxes = fingerprint["box_statistics"]["2"]
    assert boxes["box_count"] == 1 and boxes["cases_without_boxes"] == 1
    assert fingerprint["cases"]["case_001"]["class_volumes_ml"]["2"] == 0.0
    assert fingerprint["cases"]["case_001"]["foreground_voxels"] == 6


@pytest.mark.parametrize("ending, bad_value", [(".mha", np.nan), (".nrrd", np.nan), (".mha", -np.inf)])
def test_nan_voxel_raises_naming_case_and_file(tmp_path, ending, bad_value):
    image, label, boxes = _case1()
    image[0, 0, 0] = bad_value
    folder = _write_dataset(tmp_path, [(_case0(), CASE0_SPACING), ((image, label, boxes), CASE1_SPACING)], ending)
    with pytest.raises(DatasetError) as raised:
        _fingerprint(folder)
    problem, = raised.value.problems
    assert problem.case == "case_001"
    assert problem.file == str(folder / "imagesTr" / f"case_001_0000{ending}")
    assert "NaN or infinite" in problem.message
    assert "case_001" in str(raised.value) and f"case_001_0000{ending}" in str(raised.value)


@pytest.mark.xfail(reason="SimpleITK 2.5 (ITK 5) replaces NaN/Inf voxels of NIfTI files with 0 when reading "
                          "(ITK PR #6683, fixed for ITK 6), so the NaN check cannot see them in .nii.gz images; "
                          "the bytes on disk are NaN", strict=False)
def test_nan_voxel_in_nifti_raises(tmp_path):
    image, label, boxes = _case1()
    image[0, 0, 0] = np.nan
    folder = _write_dataset(tmp_path, [(_case0(), CASE0_SPACING), ((image, label, boxes), CASE1_SPACING)])
    with pytest.raises(DatasetError):
        _fingerprint(folder)


def test_undeclared_label_raises_naming_case_and_file(tmp_path):
    image, label, boxes = _case0()
    label[0, 0, 0] = 7
    folder = _write_dataset(tmp_path, [((image, label, boxes), CASE0_SPACING), (_case1(), CASE1_SPACING)])
    with pytest.raises(DatasetError) as raised:
        _fingerprint(folder)
    problem, = raised.value.problems
    assert problem.case == "case_000"
    assert problem.file == str(folder / "labelsTr" / "case_000.nii.gz")
    assert "[7]" in problem.message
    assert "case_000.nii.gz" in str(raised.value)


def test_every_bad_case_is_reported(tmp_path):
    image0, label0, boxes0 = _case0()
    label0[0, 0, 0] = 9
    image1, label1, boxes1 = _case1()
    image1[1, 1, 1] = np.inf
    folder = _write_dataset(tmp_path, [((image0, label0, boxes0), CASE0_SPACING),
                                       ((image1, label1, boxes1), CASE1_SPACING)], ".mha")
    with pytest.raises(DatasetError) as raised:
        _fingerprint(folder)
    assert sorted(p.case for p in raised.value.problems) == ["case_000", "case_001"]


def test_tiny_kits_like_dataset_class_volumes(tmp_path):
    # independent count of the generated label maps: voxels x voxel volume / 1000
    spacings = [(3.0, 0.8, 0.8), (2.0, 1.0, 0.5)]
    folder = write_tiny_dataset(tmp_path, num_cases=2, spacings=spacings)
    fingerprint, _ = _fingerprint(folder)
    for index, spacing in enumerate(spacings):
        _, label = make_case_arrays(index)
        case = fingerprint["cases"][f"case_{index:03d}"]
        written, _ = read_image(folder / "labelsTr" / f"case_{index:03d}.nii.gz")
        assert np.array_equal(written, label)
        voxel_ml = np.prod(spacing) / 1000
        assert case["class_volumes_ml"]["1"] == pytest.approx(np.count_nonzero(label == 1) * voxel_ml, rel=1e-6)
        assert case["shape_before_crop"] == [12, 40, 36]
    assert fingerprint["box_statistics"]["2"]["box_count"] >= 2
