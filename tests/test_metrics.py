"""Overlap metrics and folder evaluation, checked against hand-computed numbers."""
import json
import math

import numpy as np
import pytest

from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import case_metrics, evaluate_folders, label_metrics
from boxunet.io.images import Geometry, write_image


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_dice_of_two_overlapping_boxes():
    # 4x4x4 boxes shifted by 2 along x: overlap 4 * 4 * 2 = 32, each box 64 voxels, volume 8 * 8 * 8
    reference = _box((8, 8, 8), (0, 0, 0), (4, 4, 4))
    prediction = _box((8, 8, 8), (0, 0, 2), (4, 4, 6))
    metrics = label_metrics(reference, prediction)
    assert metrics == {"TP": 32, "FP": 32, "FN": 32, "TN": 512 - 96, "n_ref": 64, "n_pred": 64,
                       "Dice": 0.5, "IoU": pytest.approx(1 / 3)}
    # ignoring the predicted-only half (x 4..5) removes the false positives: Dice 2 * 32 / (64 + 32)
    ignored = label_metrics(reference, prediction, ignore=_box((8, 8, 8), (0, 0, 4), (8, 8, 6)))
    assert (ignored["FP"], ignored["TN"], ignored["Dice"]) == (0, 512 - 128 - 64, pytest.approx(2 / 3))


def test_both_empty_gives_nan():
    empty = np.zeros((3, 3, 3), bool)
    metrics = label_metrics(empty, empty)
    assert math.isnan(metrics["Dice"]) and math.isnan(metrics["IoU"])
    assert (metrics["TP"], metrics["TN"], metrics["n_ref"]) == (0, 27, 0)
    assert label_metrics(empty, ~empty)["Dice"] == 0.0


def test_case_metrics_for_labels_and_regions():
    reference = np.array([[[0, 1, 1, 2, 2, 0]]])
    prediction = np.array([[[0, 1, 2, 2, 0, 1]]])
    metrics = case_metrics(reference, prediction, [1, 2, (1, 2)])
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
