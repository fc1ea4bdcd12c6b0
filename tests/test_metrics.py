"""Overlap, volume and surface metrics, the KiTS composite, folder evaluation and boxunet_evaluate,
checked against hand-computed numbers."""
import itertools
import json
import math
import re

import numpy as np
import pytest

from boxunet.cli.evaluate import main as evaluate_main
from boxunet.errors import BoxunetError
from boxunet.evaluation.kits import kits_regions
from boxunet.evaluation.metrics import case_metrics, evaluate_folders, label_metrics
from boxunet.evaluation.surface import surface_dice, surface_distance_metrics
from boxunet.io.images import Geometry, write_image


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_dice_of_two_overlapping_boxes():
    # 4x4x4 boxes shifted by 2 along x: overlap 4 * 4 * 2 = 32, each box 64 voxels, volume 8 * 8 * 8
    reference = _box((8, 8, 8), (0, 0, 0), (4, 4, 4))
    prediction = _box((8, 8, 8), (0, 0, 2), (4, 4, 6))
    metrics = label_metrics(reference, prediction, (1, 1, 1), surface_metrics=False)
    assert metrics == {"TP": 32, "FP": 32, "FN": 32, "TN": 512 - 96, "n_ref": 64, "n_pred": 64,
                       "Dice": 0.5, "IoU": pytest.approx(1 / 3), "volume_difference_ml": 0.0}
    # ignoring the predicted-only half (x 4..5) removes the false positives: Dice 2 * 32 / (64 + 32)
    ignored = label_metrics(reference, prediction, (1, 1, 1), ignore=_box((8, 8, 8), (0, 0, 4), (8, 8, 6)))
    assert (ignored["FP"], ignored["TN"], ignored["Dice"]) == (0, 512 - 128 - 64, pytest.approx(2 / 3))


def test_both_empty_gives_nan():
    empty = np.zeros((3, 3, 3), bool)
    metrics = label_metrics(empty, empty, (1, 1, 1))
    assert all(math.isnan(metrics[name]) for name in ("Dice", "IoU", "HD95", "ASSD"))
    assert (metrics["TP"], metrics["TN"], metrics["n_ref"]) == (0, 27, 0)
    assert label_metrics(empty, ~empty, (1, 1, 1))["Dice"] == 0.0


def test_case_metrics_for_labels_and_regions():
    reference = np.array([[[0, 1, 1, 2, 2, 0]]])
    prediction = np.array([[[0, 1, 2, 2, 0, 1]]])
    metrics = case_metrics(reference, prediction, [1, 2, (1, 2)], (1, 1, 1), surface_metrics=False)
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


def test_hd95_and_assd_of_two_cubes_shifted_along_x():
    # 3x3x3 cubes, the prediction shifted by 2 voxels = 4 mm along x. A cube's surface is its 26 voxels
    # around the centre. Reference slabs x 1, 2, 3; prediction slabs x 3, 4, 5. Reference surface to the
    # nearest prediction surface: slab x 3 (9 voxels) is shared -> 0; slab x 2 (8 voxels) is 1 voxel from the
    # all-surface slab x 3 -> 2 mm; slab x 1 (9 voxels) -> 4 mm; no prediction voxel is closer, as all have
    # x >= 3. The other direction is the mirror image. Sorted, each direction is 9 x 0, 8 x 2, 9 x 4:
    # its 95th percentile (position 0.95 * 25 = 23.75, between two 4s) is 4 mm, so HD95 = 4 mm;
    # ASSD = 2 * (8 * 2 + 9 * 4) / 52 = 2 mm.
    reference = _box((5, 5, 7), (1, 1, 1), (4, 4, 4))
    prediction = _box((5, 5, 7), (1, 1, 3), (4, 4, 6))
    assert surface_distance_metrics(reference, prediction, SPACING) == {"HD95": 4.0, "ASSD": 2.0}
    metrics = label_metrics(reference, prediction, SPACING)
    assert (metrics["HD95"], metrics["ASSD"], metrics["volume_difference_ml"]) == (4.0, 2.0, 0.0)


def _brute_force_surface_distances(a, b, spacing):
    def surface_points(mask):
        padded = np.pad(mask, 1)  # the image border counts as outside
        points = []
        for index in zip(*np.nonzero(mask)):
            for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
                neighbour = np.array(index) + 1
                neighbour[axis] += step
                if not padded[tuple(neighbour)]:
                    points.append(np.array(index) * spacing)
                    break
        return np.array(points)

    points_a, points_b = surface_points(a), surface_points(b)
    pairwise = np.linalg.norm(points_a[:, None] - points_b[None], axis=-1)
    a_to_b, b_to_a = pairwise.min(1), pairwise.min(0)
    return {"HD95": max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)),
            "ASSD": np.concatenate([a_to_b, b_to_a]).mean()}


@pytest.mark.parametrize("shape, reference_box, prediction_box, spacing", [
    # boxes touching the image border, shifted along every axis, anisotropic spacing
    ((4, 7, 8), ((0, 1, 0), (3, 6, 5)), ((1, 2, 2), (4, 7, 8)), SPACING),
    ((9, 8), ((0, 1), (5, 4)), ((2, 2), (9, 8)), (0.5, 1.5)),  # 2D
])
def test_surface_distances_match_a_brute_force_over_surface_pairs(shape, reference_box, prediction_box, spacing):
    reference, prediction = _box(shape, *reference_box), _box(shape, *prediction_box)
    expected = _brute_force_surface_distances(reference, prediction, np.asarray(spacing))
    assert surface_distance_metrics(reference, prediction, spacing) == pytest.approx(expected)


def test_surface_distances_of_identical_and_empty_masks():
    cube = _box((4, 4, 3), (1, 1, 0), (3, 3, 2))
    empty = np.zeros_like(cube)
    assert surface_distance_metrics(cube, cube, SPACING) == {"HD95": 0.0, "ASSD": 0.0}
    assert all(math.isnan(v) for v in surface_distance_metrics(empty, empty, SPACING).values())
    # one mask empty -> the image diagonal: sqrt((4 * 3)^2 + (4 * 1)^2 + (3 * 2)^2) = sqrt(196) = 14 mm
    assert surface_distance_metrics(cube, empty, SPACING) == {"HD95": 14.0, "ASSD": 14.0}
    assert surface_distance_metrics(empty, cube, SPACING) == {"HD95": 14.0, "ASSD": 14.0}
    # 2D: sqrt((3 * 1)^2 + (2 * 2)^2) = 5 mm
    assert surface_distance_metrics(np.zeros((3, 2), bool), np.ones((3, 2), bool), (1, 2))["HD95"] == 5.0


def test_volume_difference_in_ml():
    # 9 predicted and 27 reference voxels of 3 * 1 * 2 = 6 mm^3: (9 - 27) * 6 / 1000 ml
    reference = _box((5, 5, 5), (0, 0, 0), (3, 3, 3))
    prediction = _box((5, 5, 5), (0, 0, 0), (1, 3, 3))
    metrics = label_metrics(reference, prediction, SPACING, surface_metrics=False)
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


def test_surface_dice_on_hand_made_masks():
    # reference x 0..3, prediction x 0..4 on a 1 x 1 x 8 line, spacing 1 mm: the surface of each is the whole
    # mask (every voxel touches the image border in y and z); reference voxels lie 0..1 mm from the
    # prediction, prediction voxel x = 4 lies 1 mm from the reference: all within 1 mm, 8 / 9 within 0.5 mm
    reference, prediction = np.zeros((1, 1, 8), bool), np.zeros((1, 1, 8), bool)
    reference[0, 0, :4], prediction[0, 0, :5] = True, True
    assert surface_dice(reference, prediction, (1.0, 1.0, 1.0), 1.0) == pytest.approx(1.0)
    assert surface_dice(reference, prediction, (1.0, 1.0, 1.0), 0.5) == pytest.approx(8 / 9)
    assert surface_dice(reference, prediction, (1.0, 1.0, 2.0), 1.0) == pytest.approx(8 / 9)
    assert surface_dice(reference, np.zeros_like(reference), (1.0, 1.0, 1.0), 1.0) == 0.0


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
    summary = evaluate_folders(reference, prediction, [1, 2, 3], ".nii.gz", label_names=names, surface_metrics=False)
    composites = [case["kits_composite"] for case in summary["metric_per_case"]]
    assert composites == pytest.approx([(8 / 11 + 1 / 2) / 2, 2 / 3])
    assert summary["kits_composite"] == {"mean": pytest.approx(((8 / 11 + 1 / 2) / 2 + 2 / 3) / 2)}
    # HECs with KiTS's empty rule: masses a: reference x 3..5, prediction x 2, 3, 7 -> 2 / 6; b: both empty -> 1
    hecs = summary["kits"]["mean"]
    assert hecs["kidney_and_masses"]["Dice"] == pytest.approx((8 / 11 + 2 / 3) / 2)
    assert hecs["masses"]["Dice"] == pytest.approx((2 / 6 + 1) / 2)
    assert hecs["tumor"]["Dice"] == pytest.approx((1 / 2 + 1) / 2)
    assert summary["kits"]["tolerance_mm"] == {"kidney_and_masses": 1.03, "masses": 1.13, "tumor": 1.15}
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
