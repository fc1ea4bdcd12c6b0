"""The promised commands: ``boxunet_train ID 3d_fullres`` trains every fold (resuming after kill -9 without
retraining finished folds) and chooses the model; ``boxunet_predict -i IN -o OUT -d ID`` predicts with it, whole
or split into parts."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import plan_tiny_3d_fullres, write_tiny_dataset

from boxunet.cli.predict import main as predict_main
from boxunet.cli.train import fold_command
from boxunet.cli.train import main as train_main
from boxunet.errors import BoxunetError
from boxunet.io.images import read_geometry, read_image
from boxunet.train_folds import check_devices, check_folds, run_on_devices

MODEL = "Trainer__boxunetPlans__3d_fullres"
TRAIN = ["1", "3d_fullres", "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "-np", "0", "--quiet"]


def _roots(tmp_path_factory, name):
    root = tmp_path_factory.mktemp(name)
    monkeypatch = pytest.MonkeyPatch()
    roots = {kind: root / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in roots.items():
        monkeypatch.setenv(f"boxunet_{kind}", str(path))
    return roots, monkeypatch


def _kill_in_fold_2(roots) -> None:
    """Start the fold-less training in a process and kill -9 it once fold 2 has started."""
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "boxunet.cli.train", *TRAIN], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fold_2 = roots["results"] / "Dataset001_Tiny" / MODEL / "fold_2"
    deadline = time.monotonic() + 240
    while not fold_2.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert fold_2.is_dir(), process.stderr.read().decode()
    assert not (fold_2 / "checkpoint_final.pth").is_file(), "killed while fold 2 trained"


@pytest.fixture(scope="module")
def cross_validated(tmp_path_factory):
    """Five folds trained by one command that was killed in fold 2 and run again."""
    roots, monkeypatch = _roots(tmp_path_factory, "cross_validation")
    write_tiny_dataset(roots["raw"], num_cases=5, with_boxes=False)
    plan_tiny_3d_fullres()
    _kill_in_fold_2(roots)
    model = roots["results"] / "Dataset001_Tiny" / MODEL
    before = {fold: (model / f"fold_{fold}" / "checkpoint_final.pth").stat().st_mtime_ns for fold in (0, 1)}
    yield roots, model, before
    monkeypatch.undo()


def _new_images(roots, folder, cases=("case_000", "case_001", "case_003")):
    folder.mkdir()
    images = roots["raw"] / "Dataset001_Tiny" / "imagesTr"
    for index, case in enumerate(cases):
        (folder / f"new_{index}_0000.nii.gz").write_bytes((images / f"{case}_0000.nii.gz").read_bytes())
    return folder


@pytest.mark.slow
def test_training_without_a_fold_resumes_and_chooses_the_model(cross_validated, capsys):
    roots, model, before = cross_validated
    train_main(TRAIN)
    output = capsys.readouterr().out
    assert "fold 0 (1/5): finished before, skipped" in output and "fold 1 (2/5): finished before, skipped" in output
    assert "fold 2 (3/5): training" in output and "fold 4: done in" in output
    assert {fold: (model / f"fold_{fold}" / "checkpoint_final.pth").stat().st_mtime_ns for fold in (0, 1)} == before
    for fold in range(5):
        validation = model / f"fold_{fold}" / "validation"
        assert (validation / "summary.json").is_file() and list(validation.glob("*.npz")), fold
    merged = json.loads((model / "crossval_results_folds_0_1_2_3_4" / "summary.json").read_text())
    assert len(merged["metric_per_case"]) == 5
    assert "cross-validation of Trainer__boxunetPlans__3d_fullres (5 cases, folds 0 1 2 3 4)" in output
    assert f"{merged['foreground_mean']['Dice']:.4f}" in output
    information = json.loads((roots["results"] / "Dataset001_Tiny" / "inference_information.json").read_text())
    assert information["best"]["name"] == MODEL and set(information["best"]["checkpoints"][MODEL]) == set("01234")
    train_main(TRAIN)  # everything finished: nothing is trained again
    assert capsys.readouterr().out.count("finished before, skipped") == 5


@pytest.mark.slow
def test_predict_without_a_configuration_uses_the_choice_and_parts_split_it(cross_validated, tmp_path, capsys):
    roots, model, _ = cross_validated
    inputs = _new_images(roots, tmp_path / "new")
    fast = ["-np", "0", "--disable-tta"]
    predict_main(["-i", str(inputs), "-o", str(tmp_path / "whole"), "-d", "1", *fast])
    output = capsys.readouterr().out
    assert f"with {MODEL}, 5-fold ensemble (folds 0 1 2 3 4)" in output
    report = json.loads((tmp_path / "whole" / "prediction_report.json").read_text())
    assert report["model"]["choice"] == MODEL and report["model"]["folds"] == ["0", "1", "2", "3", "4"]
    for index in range(3):
        assert read_geometry(tmp_path / "whole" / f"new_{index}.nii.gz") == read_geometry(inputs / f"new_{index}_0000.nii.gz")
    parts = tmp_path / "parts"
    for part, expected in ((0, {"new_0", "new_2"}), (1, {"new_0", "new_1", "new_2"})):
        predict_main(["-i", str(inputs), "-o", str(parts), "-d", "1", *fast, "--quiet",
                      "--num-parts", "2", "--part-id", str(part)])
        assert {p.name[:-7] for p in parts.glob("*.nii.gz")} == expected
    for index in range(3):
        assert np.array_equal(read_image(parts / f"new_{index}.nii.gz")[0],
                              read_image(tmp_path / "whole" / f"new_{index}.nii.gz")[0])
    predict_main(["-i", str(inputs), "-o", str(parts), "-d", "1", *fast, "--quiet"])
    final = json.loads((parts / "prediction_report.json").read_text())
    assert final["predicted"] == [] and final["skipped"] == ["new_0", "new_1", "new_2"]
    assert not list(parts.glob("*.part_*")), "the parts' records are merged into the folder's"


def _predict_fails(inputs, output) -> str:
    with pytest.raises(SystemExit) as refused:
        predict_main(["-i", str(inputs), "-o", str(output), "-d", "1"])
    assert not output.exists(), "refused before anything is written"
    return str(refused.value)


@pytest.mark.slow
def test_a_stale_or_missing_choice_is_refused(cross_validated, tmp_path):
    roots, model, _ = cross_validated
    inputs = _new_images(roots, tmp_path / "new", cases=("case_000",))
    checkpoint = model / "fold_3" / "checkpoint_final.pth"
    stamp = checkpoint.stat()
    os.utime(checkpoint, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10 ** 9))  # as if retrained
    try:
        error = _predict_fails(inputs, tmp_path / "out")
    finally:
        os.utime(checkpoint, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert f"{MODEL}: fold 3 was retrained since" in error and "boxunet_find_best_configuration 1" in error
    information = roots["results"] / "Dataset001_Tiny" / "inference_information.json"
    saved = information.read_bytes()
    information.unlink()
    try:
        error = _predict_fails(inputs, tmp_path / "out")
    finally:
        information.write_bytes(saved)
    assert "no model of Dataset001_Tiny is chosen yet" in error and "boxunet_train 1 CONFIGURATION" in error


def test_fold_lists_devices_and_parts_are_checked():
    assert check_folds(None) == ["0", "1", "2", "3", "4"] and check_folds(["4", "0"]) == ["0", "4"]
    with pytest.raises(BoxunetError, match="fold 2 is named twice"):
        check_folds(["2", "0", "2"])
    with pytest.raises(BoxunetError, match="5 is not a cross-validation fold"):
        check_folds(["0", "5"])
    with pytest.raises(BoxunetError, match="device 2 does not exist"):
        check_devices([0, 2], "cuda", visible=2)
    with pytest.raises(BoxunetError, match="needs -device cuda"):
        check_devices([0], "cpu", visible=0)
    with pytest.raises(BoxunetError, match="the part id must be one of 0-1"):
        from boxunet.parallel import share_of
        share_of([1, 2, 3], 2, 2)


def test_folds_run_one_per_device(tmp_path):
    """The scheduler of ``--devices``: each fold's command runs with its GPU as CUDA_VISIBLE_DEVICES, at most one
    per device at a time; a failing fold is reported after the others."""
    script = "import os, sys, time; time.sleep(0.3); print(os.environ['CUDA_VISIBLE_DEVICES']); sys.exit(sys.argv[1] == '3')"
    log = []
    with pytest.raises(BoxunetError, match=r"fold 3 \(GPU \d\) exited with code 1"):
        run_on_devices(["0", "1", "2", "3"], [5, 7], lambda fold: [sys.executable, "-c", script, fold], tmp_path,
                       log.append, poll_seconds=0.05)
    used = {fold: (tmp_path / f"fold_{fold}" / "console.txt").read_text().strip() for fold in "0123"}
    assert used["0"] == "5" and used["1"] == "7" and set(used.values()) == {"5", "7"}
    assert sum("training on GPU" in line for line in log) == 4
    command = fold_command(["1", "3d_fullres", "--devices", "0,1", "--epochs", "3"], "2")
    assert command[1:] == ["-m", "boxunet.cli.train", "1", "3d_fullres", "--epochs", "3", "--folds", "2",
                           "--no-selection", "-device", "cuda"]
