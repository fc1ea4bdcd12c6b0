"""boxunet_evaluate's KiTS HEC scores against the official KiTS21/23 evaluation's recipe (HEC masks, Dice, DeepMind
surface-distance's Surface Dice at the official tolerances, its empty-case rules), Surface Dice at a user's
tolerance, and the errors of bad input."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import surface_distance as deepmind

from boxunet.cli.evaluate import main as evaluate_main

OFFICIAL_HECS = {"kidney_and_masses": ((1, 2, 3), 1.0330772532390826), "masses": ((2, 3), 1.1328796488598762),
                 "tumor": ((2,), 1.1498198361434828)}
SITK_SPACING = (0.8, 0.8, 4.0)  # x, y, z as KiTS stores it: 4 mm slices


def _official_scores(prediction_file, reference_file) -> dict:
    """What kits23/evaluation/metrics.py computes for one case, per HEC: (Dice, Surface Dice)."""
    prediction_image, reference_image = sitk.ReadImage(str(prediction_file)), sitk.ReadImage(str(reference_file))
    spacing = tuple(prediction_image.GetSpacing())[::-1]
    prediction, reference = sitk.GetArrayFromImage(prediction_image), sitk.GetArrayFromImage(reference_image)
    scores = {}
    for name, (labels, tolerance) in OFFICIAL_HECS.items():
        predicted, expected = np.isin(prediction, labels), np.isin(reference, labels)
        if not predicted.any() and not expected.any():
            scores[name] = (1.0, 1.0)
        elif not predicted.any() or not expected.any():
            scores[name] = (0.0, 0.0)
        else:
            distances = deepmind.compute_surface_distances(expected, predicted, spacing)
            scores[name] = (2 * np.count_nonzero(predicted & expected) / (predicted.sum() + expected.sum()),
                            deepmind.compute_surface_dice_at_tolerance(distances, tolerance))
    return scores


def _kidney_case(seed: int, shape=(12, 40, 44), tumor=True, cyst=True) -> np.ndarray:
    """A label map (z, y, x) of a kidney (1) with a tumor (2) bulging out of it and a cyst (3), jagged edges."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    kidney = ((z - centre[0]) / 5) ** 2 + ((y - centre[1]) / 14) ** 2 + ((x - centre[2]) / 9) ** 2 < 1
    labels = (kidney & (rng.random(shape) > 0.03)).astype(np.uint8)
    if tumor:
        labels[((z - centre[0]) / 3) ** 2 + ((y - centre[1] - 10) / 6) ** 2 + ((x - centre[2] - 6) / 5) ** 2 < 1] = 2
    if cyst:
        labels[((z - centre[0]) / 2) ** 2 + ((y - centre[1] + 8) / 3) ** 2 + ((x - centre[2]) / 3) ** 2 < 1] = 3
    return labels[:, :, :26]  # the image border cuts the kidney and the tumor in x


def _perturbed(labels: np.ndarray, kind: str) -> np.ndarray:
    if kind == "shift":
        return np.roll(labels, (1, 2, -2), axis=(0, 1, 2))
    if kind == "noise":
        rng = np.random.default_rng(7)
        flip = rng.random(labels.shape) < 0.05
        return np.where(flip, rng.integers(0, 4, labels.shape), labels).astype(np.uint8)
    if kind == "no tumor":
        return np.where(labels == 2, 1, labels).astype(np.uint8)
    return labels[:, :, ::-1].copy()  # "mirrored"


def _write(path, labels):
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(SITK_SPACING)
    image.SetOrigin((-10.0, 4.0, 2.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _dataset(root, labels: dict):
    folder = root / "Dataset009_KiTS"
    folder.mkdir(parents=True)
    regions = {"regions_class_order": [1, 3, 2]} if isinstance(labels["kidney"], list) else {}
    (folder / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"} | regions))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the library's scipy.ndimage.filters
@pytest.mark.parametrize("labels", [{"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2},
                                    {"background": 0, "kidney": 1, "tumor": 2}])
def test_kits_hecs_equal_the_official_evaluation(roots, tmp_path, labels):
    _dataset(roots["raw"], labels)
    kits19 = "cyst" not in labels and "masses" not in labels
    cases = {}
    for index, kind in enumerate(("shift", "noise", "no tumor", "mirrored")):
        reference = _kidney_case(index, cyst=not kits19, tumor=index != 3)  # case 3: no tumor in either
        prediction = _perturbed(reference, kind)
        if kits19:
            prediction = np.minimum(prediction, 2)
        cases[f"case_{index:05d}"] = (reference, prediction)
        _write(tmp_path / "ref" / f"case_{index:05d}.nii.gz", reference)
        _write(tmp_path / "pred" / f"case_{index:05d}.nii.gz", prediction)
    evaluate_main([str(tmp_path / "ref"), str(tmp_path / "pred"), "-d", "9", "-np", "1"])
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["kits"]["tolerance_mm"] == {name: tolerance for name, (_, tolerance) in OFFICIAL_HECS.items()}
    seen = set()
    for case in summary["metric_per_case"]:
        case_id = case["prediction_file"].split("/")[-1][:-len(".nii.gz")]
        official = _official_scores(case["prediction_file"], case["reference_file"])
        for name, (dice, surface_dice) in official.items():
            assert case["kits"][name]["Dice"] == pytest.approx(dice, abs=1e-6), (case_id, name)
            assert case["kits"][name]["SurfaceDice"] == pytest.approx(surface_dice, abs=1e-6), (case_id, name)
            seen.add(round(surface_dice, 3))
    assert {0.0, 1.0} <= seen and len(seen) >= 6, "empty rules and partial overlaps were both exercised"
    # the regions' HD95 and ASSD come from the same surface elements (surface-distance's robust Hausdorff)
    reference, prediction = cases["case_00000"]
    region, key = ((1,), "1") if kits19 else ((1, 2, 3), "(1, 2, 3)")
    distances = deepmind.compute_surface_distances(np.isin(reference, region), np.isin(prediction, region),
                                                   SITK_SPACING[::-1])
    first = summary["metric_per_case"][0]["metrics"][key]
    assert first["HD95"] == pytest.approx(deepmind.compute_robust_hausdorff(distances, 95), abs=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the library's scipy.ndimage.filters
def test_surface_dice_at_a_tolerance_per_label_and_its_errors(roots, tmp_path, capsys):
    _dataset(roots["raw"], {"background": 0, "kidney": 1, "tumor": 2})
    reference, prediction = _kidney_case(0, cyst=False), _perturbed(_kidney_case(0, cyst=False), "shift")
    _write(tmp_path / "ref" / "case_00000.nii.gz", reference)
    _write(tmp_path / "pred" / "case_00000.nii.gz", prediction)
    arguments = [str(tmp_path / "ref"), str(tmp_path / "pred"), "-d", "9", "-np", "1"]
    evaluate_main(arguments + ["--nsd-tolerance", "2", "1.5"])
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["nsd_tolerance_mm"] == {"1": 2.0, "2": 1.5}
    for label, tolerance in ((1, 2.0), (2, 1.5)):
        distances = deepmind.compute_surface_distances(reference == label, prediction == label, (4.0, 0.8, 0.8))
        assert summary["mean"][str(label)]["SurfaceDice"] == pytest.approx(
            deepmind.compute_surface_dice_at_tolerance(distances, tolerance), abs=1e-6)
    assert "SurfaceDice" not in summary["mean"]["0"] and "SurfaceDice" in summary["foreground_mean"]
    assert "SD" in capsys.readouterr().out
    evaluate_main(arguments + ["--nsd-tolerance", "2"])
    assert json.loads((tmp_path / "pred" / "summary.json").read_text())["nsd_tolerance_mm"] == {"1": 2.0, "2": 2.0}

    def error_of(*extra):
        (tmp_path / "pred" / "summary.json").unlink(missing_ok=True)
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main(arguments + list(extra))
        assert not (tmp_path / "pred" / "summary.json").exists(), "nothing written"
        return str(exit_info.value.code)

    assert "3 values for 2 labels or regions (1, 2)" in error_of("--nsd-tolerance", "1", "2", "3")
    assert "tolerance 0.0: must be a positive number" in error_of("--nsd-tolerance", "0")
    assert "tolerance -1.0: must be a positive number" in error_of("--nsd-tolerance", "-1", "1")
    assert "--nsd-tolerance needs the surface metrics" in error_of("--nsd-tolerance", "1", "--no-surface")
    _write(tmp_path / "pred" / "case_00000.nii.gz", np.where(prediction == 2, 5, prediction).astype(np.uint8))
    message = error_of()
    assert "case 'case_00000'" in message and "pred/case_00000.nii.gz holds label value(s) [5]" in message
    _write(tmp_path / "pred" / "case_00000.nii.gz", np.where(prediction == 2, 1.5, prediction).astype(np.float32))
    assert "holds label value(s) [1.5]" in error_of()
