"""Overlap, volume and surface metrics, the KiTS composite, folder evaluation and boxunet_evaluate,
checked against hand-computed numbers."""
import json
import math
import re

import numpy as np
import pytest
import surface_distance as deepmind

from boxunet.cli.evaluate import main as evaluate_main
from boxunet.errors import BoxunetError
from boxunet.evaluation.case_masks import CaseMasks, region_mask
from boxunet.evaluation.kits import kits_regions
from boxunet.evaluation.metrics import case_metrics, evaluate_folders, label_metrics
from boxunet.evaluation.surface import surface_distances, surface_metrics
from boxunet.io.images import Geometry, write_image


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_dice_of_two_overlapping_boxes():
    # 4x4x4 boxes shifted by 2 along x: overlap 4 * 4 * 2 = 32, each box 64 voxels, volume 8 * 8 * 8
    reference = _box((8, 8, 8), (0, 0, 0), (4, 4, 4))
    prediction = _box((8, 8, 8), (0, 0, 2), (4, 4, 6))
    metrics = label_metrics(reference, prediction, (1, 1, 1), surface=False)
    assert metrics == {"TP": 32, "FP": 32, "FN": 32, "TN": 512 - 96, "n_ref": 64, "n_pred": 64,
                       "Dice": 0.5, "IoU": pytest.approx(1 / 3), "volume_difference_ml": 0.0}
    # the same masks as a crop of a 10 x 8 x 8 image: 128 more true negatives
    cropped = label_metrics(reference, prediction, (1, 1, 1), surface=False, image_shape=(10, 8, 8))
    assert cropped["TN"] == 640 - 96 and cropped["Dice"] == 0.5


def test_both_empty_gives_nan():
    empty = np.zeros((3, 3, 3), bool)
    metrics = label_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(metrics[name]) for name in ("Dice", "IoU", "HD95", "ASSD"))
    assert (metrics["TP"], metrics["TN"], metrics["n_ref"]) == (0, 27, 0)
    assert label_metrics(empty, ~empty, (1, 1, 1))["Dice"] == 0.0


def test_case_metrics_for_labels_and_regions():
    reference = np.array([[[0, 1, 1, 2, 2, 0]]])
    prediction = np.array([[[0, 1, 2, 2, 0, 1]]])
    metrics = case_metrics(CaseMasks(reference, prediction, (1, 1, 1)), [1, 2, (1, 2)], surface=False)
    assert list(metrics) == ["1", "2", "(1, 2)"]
    # label 1: TP 1, FP 1 (x 5), FN 1 (x 2) -> 2 / 4; label 2: TP 1, FP 1 (x 2), FN 1 (x 4) -> 0.5
    assert metrics["1"]["Dice"] == 0.5 and metrics["2"]["Dice"] == 0.5
    # region {1, 2}: reference x 1..4, prediction x 1, 2, 3, 5 -> TP 3, FP 1, FN 1 -> 6 / 8
    assert metrics["(1, 2)"]["Dice"] == 0.75 and metrics["(1, 2)"]["IoU"] == 0.6


def _write(folder, name, array, geometry=None):
    array = np.asarray(array, np.uint8)
    geometry = geometry or Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), array.shape)
    write_image(array, geometry, folder / name)


def test_evaluate_folders_writes_the_summary(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    _write(reference, "a.nii.gz", [[[1, 1, 2, 0]]])
    _write(prediction, "a.nii.gz", [[[1, 0, 2, 0]]])   # label 1 Dice 2 / 3, label 2 Dice 1
    _write(reference, "b.nii.gz", [[[1, 1, 0, 0]]])
    _write(prediction, "b.nii.gz", [[[1, 1, 0, 0]]])   # label 1 Dice 1, label 2 empty in both -> NaN
    _write(prediction, "extra.nii.gz", [[[0, 0, 0, 0]]])  # predictions without reference are not evaluated
    summary_file = tmp_path / "summary.json"
    summary = evaluate_folders(reference, prediction, [1, 2], ".nii.gz", summary_file, num_processes=1)
    cases = summary["metric_per_case"]
    assert [c["reference_file"] for c in cases] == [str(reference / "a.nii.gz"), str(reference / "b.nii.gz")]
    assert cases[0]["prediction_file"] == str(prediction / "a.nii.gz")
    assert cases[0]["metrics"]["1"]["Dice"] == pytest.approx(2 / 3)
    assert summary["mean"]["1"]["Dice"] == pytest.approx(5 / 6)   # (2/3 + 1) / 2
    assert summary["mean"]["2"]["Dice"] == 1.0                    # the NaN of case b is skipped
    assert summary["mean"]["1"]["FN"] == 0.5
    assert summary["foreground_mean"]["Dice"] == pytest.approx((5 / 6 + 1) / 2)
    stored = json.loads(summary_file.read_text())
    assert math.isnan(stored["metric_per_case"][1]["metrics"]["2"]["Dice"])
    assert stored["mean"]["1"]["Dice"] == pytest.approx(5 / 6)


def test_background_is_left_out_of_the_foreground_mean(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    _write(reference, "a.nii.gz", [[[0, 1, 1, 0]]])
    _write(prediction, "a.nii.gz", [[[0, 1, 0, 0]]])   # background Dice 2*2/5, label 1 Dice 2/3
    summary = evaluate_folders(reference, prediction, [0, 1], ".nii.gz")
    assert summary["mean"]["0"]["Dice"] == pytest.approx(0.8)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(2 / 3)


def test_geometry_mismatch_and_missing_prediction_raise(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    _write(reference, "a.nii.gz", [[[1, 0]]])
    shifted = Geometry((2.0, 1.0, 1.0), (0.0, 5.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 1, 2))
    _write(prediction, "a.nii.gz", [[[1, 0]]], shifted)
    with pytest.raises(BoxunetError, match=r"case 'a': prediction .*pred/a.nii.gz does not match reference "
                                           r".*ref/a.nii.gz: origin"):
        evaluate_folders(reference, prediction, [1], ".nii.gz")
    _write(reference, "b.nii.gz", [[[1, 0]]])
    with pytest.raises(BoxunetError, match="no prediction for 1 reference case.*b.nii.gz"):
        evaluate_folders(reference, prediction, [1], ".nii.gz")


# ------------------------------------------------------------------------------------ surface distances
SPACING = (3.0, 1.0, 2.0)  # mm along (z, y, x)


def _metrics(reference, prediction, spacing, tolerance_mm=None):
    return surface_metrics(reference, prediction, spacing, tolerance_mm)


def test_surface_elements_of_a_voxel_and_its_neighbour_by_hand():
    # A single voxel's surface elements are its 8 corners, each the same triangle cutting the corner. Shifted by one
    # voxel along x (2 mm), 4 corners of each are shared (distance 0) and 4 lie 2 mm away: the 95th percentile
    # of each direction is 2 mm, the pooled mean 1 mm, and half of each surface lies within 1 mm.
    reference, prediction = _box((3, 3, 4), (1, 1, 1), (2, 2, 2)), _box((3, 3, 4), (1, 1, 2), (2, 2, 3))
    assert _metrics(reference, prediction, SPACING, 1.0) == {"HD95": 2.0, "ASSD": 1.0, "SurfaceDice": 0.5}
    assert _metrics(reference, prediction, SPACING, 2.0)["SurfaceDice"] == 1.0
    distances = surface_distances(reference, prediction, SPACING)
    corner = np.sqrt(3.0 ** 2 * 1.0 ** 2 + 3.0 ** 2 * 2.0 ** 2 + 1.0 ** 2 * 2.0 ** 2) / 8  # the triangle's area
    assert distances.reference_areas == pytest.approx([corner] * 8)
    assert distances.reference_to_prediction.tolist() == [0, 0, 0, 0, 2, 2, 2, 2]


def _shell(shape, centre, radius, thickness):
    grid = np.indices(shape).transpose(1, 2, 3, 0) - np.asarray(centre)
    distance = np.linalg.norm(grid * np.asarray([1.0, 1.0, 0.6]), axis=-1)
    return (distance <= radius) & (distance > radius - thickness)


def _hard_pairs():
    """Masks hard for surface metrics: a thin curved shell against its shifted and thickened copy, a tube touching
    two image borders against a noisy copy, a flat one-slice plate, a 2D ring."""
    rng = np.random.default_rng(3)
    shell = _shell((14, 20, 22), (7, 10, 11), 8, 1.5)
    tube = np.zeros((12, 16, 18), bool)
    for z in range(12):
        y, x = int(8 + 5 * np.sin(z / 2)), int(8 + 5 * np.cos(z / 2))
        tube[z, max(y - 2, 0):y + 2, max(x - 2, 0):x + 2] = True
    tube[:, :, :2] |= tube[:, :, 2:4]  # reaches the x = 0 border too
    noisy = tube ^ (rng.random(tube.shape) < 0.08)
    plate, plate_shifted = _box((5, 12, 12), (2, 1, 1), (3, 11, 9)), _box((5, 12, 12), (3, 0, 2), (4, 12, 12))
    yy, xx = np.indices((30, 26))
    ring = np.abs(np.hypot(yy - 15, xx - 12) - 9) < 1.5
    return [(shell, np.roll(shell, 2, axis=1) | _shell((14, 20, 22), (7, 10, 11), 6, 1), (0.8, 0.8, 4.0)),
            (shell, np.roll(shell, 1, axis=0), (4.0, 0.8, 0.8)),
            (tube, noisy, (4.0, 0.8, 0.8)), (tube, noisy, (1.0, 1.0, 1.0)),
            (plate, plate_shifted, (3.0, 0.7, 0.7)), (ring, np.roll(ring, 3, axis=1), (0.6, 1.7))]


def _by_distance(distances, areas):
    order = np.lexsort((areas, np.round(distances, 9)))
    return distances[order], areas[order]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the library's scipy.ndimage.filters
@pytest.mark.parametrize("index", range(6))
def test_surface_metrics_equal_deepmind_surface_distance(index):
    reference, prediction, spacing = _hard_pairs()[index]
    expected = deepmind.compute_surface_distances(reference, prediction, spacing)
    distances = surface_distances(reference, prediction, spacing)
    pairs = (((distances.reference_to_prediction, distances.reference_areas),
              (expected["distances_gt_to_pred"], expected["surfel_areas_gt"])),
             ((distances.prediction_to_reference, distances.prediction_areas),
              (expected["distances_pred_to_gt"], expected["surfel_areas_pred"])))
    for mine, theirs in pairs:  # the same elements; equal distances may differ in the last bit
        for a, b in zip(_by_distance(*mine), _by_distance(*theirs)):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-9
    reference_average, prediction_average = deepmind.compute_average_surface_distance(expected)
    reference_area, prediction_area = expected["surfel_areas_gt"].sum(), expected["surfel_areas_pred"].sum()
    assd = (reference_average * reference_area + prediction_average * prediction_area) / (
        reference_area + prediction_area)
    surface_dices = []
    for tolerance in (0.5, 1.0330772532390826, 1.6, 4.0):
        metrics = _metrics(reference, prediction, spacing, tolerance)
        surface_dices.append(metrics["SurfaceDice"])
        assert metrics["HD95"] == pytest.approx(deepmind.compute_robust_hausdorff(expected, 95), abs=1e-6)
        assert metrics["ASSD"] == pytest.approx(assd, abs=1e-6)
        assert metrics["SurfaceDice"] == pytest.approx(
            deepmind.compute_surface_dice_at_tolerance(expected, tolerance), abs=1e-6)
    assert metrics["HD95"] > 0 and 0 < surface_dices[0] < 1, "a case that tells the conventions apart"


def test_float_label_maps_and_integer_masks():
    # a float map's 1.5 is no label: region (1, 2, 3) takes the values 1, 2 and 3 only, as np.isin and the official
    # code do; masks of 0/1 integers are read as boolean
    labels = np.array([[[0.0, 1.5, 2.0, 3.0]]], dtype=np.float32)
    assert region_mask(labels, (1, 2, 3)).tolist() == [[[False, False, True, True]]]
    assert region_mask(labels.astype(np.int16), (1, 2, 3)).tolist() == [[[False, True, True, True]]]
    cube = _box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    shifted = np.roll(cube, 1, axis=2)
    assert _metrics(cube.astype(np.int64), shifted.astype(np.int64), SPACING) == _metrics(cube, shifted, SPACING)


def test_surface_distances_of_identical_and_empty_masks():
    cube = _box((4, 4, 3), (1, 1, 0), (3, 3, 2))
    empty = np.zeros_like(cube)
    assert _metrics(cube, cube, SPACING, 1.0) == {"HD95": 0.0, "ASSD": 0.0, "SurfaceDice": 1.0}
    assert all(math.isnan(v) for v in _metrics(empty, empty, SPACING, 1.0).values())
    # one mask empty -> the image diagonal: sqrt((4 * 3)^2 + (4 * 1)^2 + (3 * 2)^2) = sqrt(196) = 14 mm
    assert _metrics(cube, empty, SPACING, 1.0) == {"HD95": 14.0, "ASSD": 14.0, "SurfaceDice": 0.0}
    assert _metrics(empty, cube, SPACING) == {"HD95": 14.0, "ASSD": 14.0}
    # 2D: sqrt((3 * 1)^2 + (2 * 2)^2) = 5 mm
    assert _metrics(np.zeros((3, 2), bool), np.ones((3, 2), bool), (1, 2))["HD95"] == 5.0


def test_case_metrics_on_the_foreground_crop_equal_those_of_the_whole_image():
    reference = np.zeros((6, 9, 10), np.uint8)
    reference[2:4, 3:6, 4:7], reference[3, 4, 5] = 1, 2
    prediction = np.zeros_like(reference)
    prediction[2:5, 3:5, 4:8] = 1
    metrics = case_metrics(CaseMasks(reference, prediction, SPACING), [0, 1, 2, (1, 2)], tolerances_mm={"1": 1.0})
    for item, key in ((0, "0"), (1, "1"), (2, "2"), ((1, 2), "(1, 2)")):
        whole = label_metrics(np.isin(reference, item), np.isin(prediction, item), SPACING, surface=item != 0,
                              tolerance_mm=1.0 if key == "1" else None)
        assert metrics[key] == pytest.approx(whole), key
    # label 2 is missing from the prediction: the whole image's diagonal, sqrt(18^2 + 9^2 + 20^2)
    assert metrics["2"]["HD95"] == pytest.approx(np.sqrt(805)) and metrics["0"]["TN"] == 2 * 2 * 3  # foreground in both


def test_volume_difference_in_ml():
    # 9 predicted and 27 reference voxels of 3 * 1 * 2 = 6 mm^3: (9 - 27) * 6 / 1000 ml
    reference = _box((5, 5, 5), (0, 0, 0), (3, 3, 3))
    prediction = _box((5, 5, 5), (0, 0, 0), (1, 3, 3))
    metrics = label_metrics(reference, prediction, SPACING, surface=False)
    assert metrics["volume_difference_ml"] == pytest.approx(-0.108)
    assert "HD95" not in metrics and "ASSD" not in metrics


# -------------------------------------------------------------------------------------- KiTS composite
def test_kits_hecs_are_recognised_by_name():
    assert kits_regions({"background": 0, "kidney": 1, "tumor": 2}) == {
        "kidney_and_masses": (1, 2), "masses": (2,), "tumor": (2,)}
    assert kits_regions({"Background": 0, "Kidney": 1, "Tumor": 2, "Cyst": 3}) == {
        "kidney_and_masses": (1, 2, 3), "masses": (2, 3), "tumor": (2,)}
    assert kits_regions({"background": 0, "liver": 1, "tumor": 2}) is None
    # the region version of KiTS21/23
    assert kits_regions({"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}) == {
        "kidney_and_masses": (1, 2, 3), "masses": (2, 3), "tumor": (2,)}


def test_kits_composite_per_case_and_mean(tmp_path):
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    # case a: kidney and masses reference x 0..5 (6 voxels), prediction x 0..3 and 7 (5), overlap 4 -> 8 / 11;
    # tumor reference x 3, 4, prediction x 2, 3 -> 1 / 2; composite (8 / 11 + 1 / 2) / 2
    _write(reference, "a.nii.gz", [[[1, 1, 1, 2, 2, 3, 0, 0]]])
    _write(prediction, "a.nii.gz", [[[1, 1, 2, 2, 0, 0, 0, 3]]])
    # case b: kidney and masses 2 * 1 / (2 + 1) = 2 / 3; no tumor in either -> NaN, skipped -> 2 / 3
    _write(reference, "b.nii.gz", [[[1, 1, 0, 0, 0, 0, 0, 0]]])
    _write(prediction, "b.nii.gz", [[[1, 0, 0, 0, 0, 0, 0, 0]]])
    names = {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3}
    summary = evaluate_folders(reference, prediction, [1, 2, 3], ".nii.gz", label_names=names, surface=False)
    composites = [case["kits_composite"] for case in summary["metric_per_case"]]
    assert composites == pytest.approx([(8 / 11 + 1 / 2) / 2, 2 / 3])
    assert summary["kits_composite"] == {"mean": pytest.approx(((8 / 11 + 1 / 2) / 2 + 2 / 3) / 2)}
    # HECs with KiTS's empty rule: masses a: reference x 3..5, prediction x 2, 3, 7 -> 2 / 6; b: both empty -> 1
    hecs = summary["kits"]["mean"]
    assert hecs["kidney_and_masses"]["Dice"] == pytest.approx((8 / 11 + 2 / 3) / 2)
    assert hecs["masses"]["Dice"] == pytest.approx((2 / 6 + 1) / 2)
    assert hecs["tumor"]["Dice"] == pytest.approx((1 / 2 + 1) / 2)
    assert summary["kits"]["tolerance_mm"] == {"kidney_and_masses": 1.0330772532390826, "masses": 1.1328796488598762,
                                               "tumor": 1.1498198361434828}
    assert "kits_composite" not in evaluate_folders(reference, prediction, [1, 2], ".nii.gz")


# ------------------------------------------------------------------------------------ boxunet_evaluate
def _write_dataset_json(root, labels):
    folder = root / "Dataset005_Kits"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}))


def test_evaluate_command_with_a_dataset(roots, tmp_path, capsys):
    _write_dataset_json(roots["raw"], {"background": 0, "kidney": 1, "tumor": 2})
    reference, prediction = tmp_path / "ref", tmp_path / "pred"
    # kidney Dice 2 * 2 / (3 + 2) = 0.8, tumor 1 / 2, kidney and masses 8 / 9 -> composite 25 / 36
    _write(reference, "a.nii.gz", [[[1, 1, 1, 2, 2, 0, 0, 0]]])
    _write(prediction, "a.nii.gz", [[[1, 1, 2, 2, 0, 0, 0, 0]]])
    evaluate_main([str(reference), str(prediction), "-d", "5", "-np", "1"])
    summary = json.loads((prediction / "summary.json").read_text())
    assert list(summary["mean"]) == ["0", "1", "2"]
    assert summary["mean"]["1"]["Dice"] == pytest.approx(0.8)
    assert set(summary["mean"]["1"]) >= {"HD95", "ASSD", "volume_difference_ml"}
    assert summary["kits_composite"]["mean"] == pytest.approx(25 / 36)
    output = capsys.readouterr().out
    assert "1 kidney" in output and "0.8000" in output and "KiTS composite" in output and "0.6944" in output


def test_evaluate_command_with_labels_and_its_errors(roots, tmp_path):
    reference, prediction, output = tmp_path / "ref", tmp_path / "pred", tmp_path / "out" / "s.json"
    _write(reference, "a.nii.gz", [[[1, 1, 0]]])
    _write(prediction, "a.nii.gz", [[[1, 0, 0]]])
    evaluate_main([str(reference), str(prediction), "-l", "1", "-o", str(output), "--no-surface", "-np", "1"])
    stored = json.loads(output.read_text())
    assert stored["mean"]["1"]["Dice"] == pytest.approx(2 / 3) and "HD95" not in stored["mean"]["1"]
    assert "kits_composite" not in stored
    output.unlink()

    def error_of(*arguments):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main([str(a) for a in arguments] + ["-o", str(output), "-np", "1"])
        assert not output.exists()  # nothing written
        return str(exit_info.value.code)

    shifted = Geometry((2.0, 1.0, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 1, 3))
    _write(reference, "b.nii.gz", [[[1, 1, 0]]])
    _write(prediction, "b.nii.gz", [[[1, 1, 0]]], shifted)
    assert re.search(r"case 'b': prediction .*pred/b.nii.gz does not match reference .*ref/b.nii.gz: spacing",
                     error_of(reference, prediction, "-l", "1"))
    (prediction / "b.nii.gz").write_bytes(b"not an image")
    assert re.search(r"case 'b': file .*pred/b.nii.gz: cannot be read as an image",
                     error_of(reference, prediction, "-l", "1"))
    assert "missing: does not exist" in error_of(reference, tmp_path / "missing", "-l", "1")
    assert "no reference files ending with '.mha'" in error_of(reference, prediction, "-l", "1", "-f", ".mha")
    assert "no folder Dataset007_*" in error_of(reference, prediction, "-d", "7")
    # a dataset only in the preprocessed root is found there
    _write_dataset_json(roots["preprocessed"], {"background": 0, "kidney": 1, "tumor": 2})
    assert "case 'b'" in error_of(reference, prediction, "-d", "5")
