"""End to end: plan, train 2 configurations x 5 folds for a few iterations, pick the best model or
ensemble, decide postprocessing, and predict new images with the printed commands."""
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import narrow_networks, write_tiny_dataset

from boxunet.cli.ensemble import main as ensemble_main
from boxunet.cli.find_best_configuration import main as find_best_main
from boxunet.cli.postprocessing import main_apply
from boxunet.cli.predict import main as predict_main
from boxunet.ensembling.find_best import checkpoint_stamps, validation_reference
from boxunet.errors import BoxunetError
from boxunet.io.images import read_geometry, read_image
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
from boxunet.training.options import TrainingOptions
from boxunet.training.run import TrainingRequest, run_training
from boxunet.training.trainer import Trainer

CONFIGURATIONS = ("2d", "3d_fullres")
COMMANDS = {"boxunet_predict": predict_main, "boxunet_ensemble": ensemble_main,
            "boxunet_apply_postprocessing": main_apply}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two configurations, five folds each, validated with probabilities (shared by this module's tests)."""
    root = tmp_path_factory.mktemp("find_best")
    monkeypatch = pytest.MonkeyPatch()
    roots = {kind: root / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in roots.items():
        monkeypatch.setenv(f"boxunet_{kind}", str(path))
    write_tiny_dataset(roots["raw"], num_cases=5, with_boxes=False, shape=(12, 40, 36))
    plan_and_preprocess("1", PlanAndPreprocessOptions(configurations=list(CONFIGURATIONS), gpu_memory_gb=0.25,
                                                      num_processes=1, progress=False))
    narrow_networks()
    options = TrainingOptions(epochs=1, iterations_per_epoch=3, validation_iterations=1, augmentation_workers=0,
                              save_probabilities=True, progress_bar=False)
    for configuration in CONFIGURATIONS:
        for fold in range(5):
            run_training(TrainingRequest("1", configuration, str(fold), Trainer, device="cpu", options=options))
    yield roots
    monkeypatch.undo()


def _run(command: str, replacements: dict) -> None:
    for placeholder, value in replacements.items():
        command = command.replace(placeholder, str(value))
    words = shlex.split(command.split("#")[0])
    COMMANDS[words[0]](words[1:] + (["--quiet"] if words[0] == "boxunet_predict" else []))


@pytest.mark.slow
def test_find_best_picks_the_best_candidate_and_its_commands_predict(trained, tmp_path, capsys):
    find_best_main(["1", "-np", "1"])
    results = trained["results"] / "Dataset001_Tiny"
    information = json.loads((results / "inference_information.json").read_text())
    names = [f"Trainer__boxunetPlans__{c}" for c in CONFIGURATIONS]
    ensemble = f"ensemble___{names[0]}___{names[1]}___crossval_results_folds_0_1_2_3_4"
    assert set(information["candidates"]) == set(names) | {ensemble}
    assert information["not_trained"] == ["Trainer__boxunetPlans__3d_lowres", "Trainer__boxunetPlans__3d_cascade_fullres"]
    scores = {name: c["foreground_mean_dice"] for name, c in information["candidates"].items()}
    assert information["best"]["name"] == max(scores, key=scores.get)
    for name in names:
        crossval = results / name / "crossval_results_folds_0_1_2_3_4"
        summary = json.loads((crossval / "summary.json").read_text())
        assert len(summary["metric_per_case"]) == 5, "every case is validated exactly once"
        assert summary["foreground_mean"]["Dice"] == pytest.approx(scores[name])
        assert (results / name / "postprocessing.json").is_file()
    assert (results / "ensembles" / ensemble / "summary.json").is_file()
    text = (results / "inference_instructions.txt").read_text()
    assert information["best"]["name"] in text and "boxunet_predict" in text
    # the printed commands predict new images with the input's geometry
    images = trained["raw"] / "Dataset001_Tiny" / "imagesTr"
    inputs = tmp_path / "new"
    inputs.mkdir()
    for case in ("case_000", "case_003"):
        (inputs / f"{case}_0000.nii.gz").write_bytes((images / f"{case}_0000.nii.gz").read_bytes())
    replacements = {"INPUT_FOLDER": inputs, "OUTPUT_FOLDER_MODEL_1": tmp_path / "m1",
                    "OUTPUT_FOLDER_MODEL_2": tmp_path / "m2", "OUTPUT_FOLDER_ENSEMBLE": tmp_path / "ensemble",
                    "OUTPUT_FOLDER": tmp_path / "final"}
    for command in information["commands"]:
        _run(command, replacements)
    final = tmp_path / "final" if (tmp_path / "final").is_dir() else tmp_path / "ensemble"
    for case in ("case_000", "case_003"):
        geometry = read_geometry(final / f"{case}.nii.gz")
        assert geometry.mismatch(read_geometry(inputs / f"{case}_0000.nii.gz")) is None


@pytest.mark.slow
def test_missing_folds_and_configurations_are_named(trained):
    results = trained["results"] / "Dataset001_Tiny"
    summary = results / "Trainer__boxunetPlans__2d" / "fold_3" / "validation" / "summary.json"
    saved = summary.read_bytes()
    summary.unlink()
    try:
        with pytest.raises(SystemExit, match=r"Trainer__boxunetPlans__2d: fold\(s\) 3 not finished"):
            find_best_main(["1", "-np", "1"])
    finally:
        summary.write_bytes(saved)
    with pytest.raises(SystemExit, match="Trainer__boxunetPlans__3d_lowres: not trained"):
        find_best_main(["1", "-c", "3d_fullres", "3d_lowres", "-np", "1"])


@pytest.mark.slow
def test_ensembling_needs_validation_probabilities(trained):
    results = trained["results"] / "Dataset001_Tiny"
    probabilities = results / "Trainer__boxunetPlans__2d" / "fold_0" / "validation"
    moved = [(p, p.read_bytes()) for p in probabilities.glob("*.npz")]
    for path, _ in moved:
        path.unlink()
    try:
        with pytest.raises(SystemExit, match="Trainer__boxunetPlans__2d: no validation probabilities"):
            find_best_main(["1", "-np", "1"])
        find_best_main(["1", "-np", "1", "--disable-ensembling"])
        information = json.loads((results / "inference_information.json").read_text())
        assert not any(name.startswith("ensemble") for name in information["candidates"])
        assert np.isfinite(information["best"]["foreground_mean_dice"])
    finally:
        for path, data in moved:
            path.write_bytes(data)


def test_models_are_compared_against_the_reference_their_validation_used(roots, tmp_path):
    """Box trainers on a boxes-only dataset validate against the stage-1 masks: so does the cross-validation."""
    def model(name: str, reference: Path) -> Path:
        folder = tmp_path / name
        for fold in ("0", "1"):
            (folder / f"fold_{fold}" / "validation").mkdir(parents=True)
            summary = {"reference_folder": str(reference)}  # as written on the machine that trained it
            (folder / f"fold_{fold}" / "validation" / "summary.json").write_text(json.dumps(summary))
        return folder

    elsewhere = Path("/other/machine/Dataset001_Tiny")
    dense = model("Trainer__boxunetPlans__2d", elsewhere / "gt_segmentations")
    boxes = model("BoxThreeStage__boxunetPlans__2d", elsewhere / "pseudo_labels" / "stage1")
    local = roots["preprocessed"] / "Dataset001_Tiny"
    assert validation_reference([dense], ["0", "1"], "Dataset001_Tiny") == local / "gt_segmentations"
    assert validation_reference([boxes], ["0", "1"], "Dataset001_Tiny") == local / "pseudo_labels" / "stage1"
    with pytest.raises(BoxunetError, match="validated against different references"):
        validation_reference([dense, boxes], ["0", "1"], "Dataset001_Tiny")


@pytest.mark.slow
def test_predict_without_a_configuration_runs_a_chosen_ensemble_in_one_command(trained, tmp_path):
    """When an ensemble is the choice, ``boxunet_predict -d`` alone gives what its expanded commands give."""
    find_best_main(["1", "-np", "1"])
    results = trained["results"] / "Dataset001_Tiny"
    information_file = results / "inference_information.json"
    saved = information_file.read_bytes()
    information = json.loads(saved)
    names = [f"Trainer__boxunetPlans__{c}" for c in CONFIGURATIONS]
    ensemble = f"ensemble___{names[0]}___{names[1]}___crossval_results_folds_0_1_2_3_4"
    folds = ["0", "1", "2", "3", "4"]
    information["best"].update(name=ensemble, members=names, postprocessing_steps=[],
                               checkpoints={name: checkpoint_stamps(results / name, folds) for name in names})
    information_file.write_text(json.dumps(information))  # as if the ensemble had won
    inputs = tmp_path / "new"
    inputs.mkdir()
    for case in ("case_001",):
        source = trained["raw"] / "Dataset001_Tiny" / "imagesTr" / f"{case}_0000.nii.gz"
        (inputs / f"{case}_0000.nii.gz").write_bytes(source.read_bytes())
    try:
        predict_main(["-i", str(inputs), "-o", str(tmp_path / "chosen"), "-d", "1", "-np", "0", "--quiet",
                      "--disable-tta"])
    finally:
        information_file.write_bytes(saved)
    report = json.loads((tmp_path / "chosen" / "prediction_report.json").read_text())
    assert report["model"]["members"] == names and report["model"]["folds"] == folds
    assert not (tmp_path / "chosen" / "ensemble_members").exists()
    for index, configuration in enumerate(CONFIGURATIONS):
        predict_main(["-i", str(inputs), "-o", str(tmp_path / f"m{index}"), "-d", "1", "-c", configuration, "-np", "0",
                      "--quiet", "--save-probabilities", "--no-postprocessing", "--disable-tta"])
    ensemble_main(["-i", str(tmp_path / "m0"), str(tmp_path / "m1"), "-o", str(tmp_path / "expanded")])
    for case in ("case_001",):
        chosen, geometry = read_image(tmp_path / "chosen" / f"{case}.nii.gz")
        assert np.array_equal(chosen, read_image(tmp_path / "expanded" / f"{case}.nii.gz")[0])
        assert geometry.mismatch(read_geometry(inputs / f"{case}_0000.nii.gz")) is None
