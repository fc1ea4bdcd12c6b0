"""Nothing stale (issue 22, items 2-5, 9, 13): every resumable step keys its reuse on the files it was made from
and the settings, a 2D image in a 3D dataset or model is refused, each step holds its output folder, and
``--c`` before the first checkpoint resumes with the options the run was started with."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
from test_prediction import ODD_GEOMETRY, _constant_model, _write_input, constant_trainer  # noqa: F401 (fixture)

from boxunet.boxes.stage1 import PseudoLabelRequest, changed_since_stage1, generate_pseudo_labels, stage1_folder
from boxunet.cli.predict import main as predict_main
from boxunet.errors import BoxunetError, DatasetError
from boxunet.io.boxes import read_boxes, write_boxes
from boxunet.io.cases import list_training_cases
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import Geometry, read_image, write_image
from boxunet.io.locks import exclusive_folder
from boxunet.io.verification import verify_headers
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
from boxunet.planning.plans import load_plans
from boxunet.preprocessing.grid_labels import open_target, store_raw_label_maps
from boxunet.trainers import get_trainer
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.options import TrainingOptions
from boxunet.training.run import TrainingRequest, run_training
from conftest import make_case_arrays, plan_tiny_3d_fullres, write_tiny_dataset

OPTIONS = PlanAndPreprocessOptions(configurations=["3d_fullres"], gpu_memory_gb=0.25, num_processes=1, progress=False)
IDENTIFIER = "boxunetPlans_3d_fullres"


def _rewrite(path, change) -> None:
    """Write ``change(array)`` back to the image file ``path`` with its geometry."""
    array, geometry = read_image(path)
    write_image(change(array), geometry, path)


def test_edited_raw_files_are_checked_again_and_only_their_cases_redone(tiny_dataset, roots):
    # MRI: per-case z-scores, so an edited image changes its own case only (a CT window would change with it)
    description = json.loads((tiny_dataset / "dataset.json").read_text())
    (tiny_dataset / "dataset.json").write_text(json.dumps(dict(description, channel_names={"0": "MRI"})))
    plan_and_preprocess("1", OPTIONS)
    preprocessed = roots["preprocessed"] / "Dataset001_Tiny"
    label_file = tiny_dataset / "labelsTr" / "case_001.nii.gz"
    original_label = label_file.read_bytes()
    stored = {name: (preprocessed / name).read_bytes()
              for name in ("gt_segmentations/case_001.nii.gz", f"{IDENTIFIER}/case_001_seg.b2nd")}

    def paint_seven(label):
        label = label.copy()
        label[5, 10, 10] = 7
        return label
    _rewrite(label_file, paint_seven)  # an undeclared label value, painted after preprocessing
    with pytest.raises(DatasetError, match=r"case_001.*label values \[7\] are not declared"):
        plan_and_preprocess("1", OPTIONS)
    assert {name: (preprocessed / name).read_bytes() for name in stored} == stored, "nothing written"

    label_file.write_bytes(original_label)  # fixed (a new modification time) ...
    _rewrite(tiny_dataset / "imagesTr" / "case_002_0000.nii.gz", lambda image: image + 50)  # ... and an image edited
    before = (preprocessed / IDENTIFIER / "case_000.b2nd").stat().st_mtime_ns
    report = plan_and_preprocess("1", OPTIONS)
    assert report["preprocessing"][IDENTIFIER] == {"processed": 2, "skipped": 2}
    assert report["reference_segmentations_copied"] == 1
    assert (preprocessed / IDENTIFIER / "case_000.b2nd").stat().st_mtime_ns == before
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    stamp = fingerprint["made_from"]["input_stamps"]["case_002"]["images"][0]
    image_status = (tiny_dataset / "imagesTr" / "case_002_0000.nii.gz").stat()
    assert stamp == [image_status.st_size, image_status.st_mtime_ns]
    assert plan_and_preprocess("1", OPTIONS)["preprocessing"][IDENTIFIER] == {"processed": 0, "skipped": 4}


def test_an_edited_box_remakes_the_masks_of_its_case_only(tiny_dataset, roots):
    plan_tiny_3d_fullres()
    generate_pseudo_labels(PseudoLabelRequest("1", progress=False))
    folder = stage1_folder(roots["preprocessed"] / "Dataset001_Tiny")
    made = {c: (folder / f"case_00{c}.json").stat().st_mtime_ns for c in range(4)}
    box_file = tiny_dataset / "boxesTr" / "case_002.json"
    box, = read_boxes(box_file)
    larger = replace(box, max=(box.max[0], box.max[1] + 2, box.max[2] + 2))  # the labels stay inside it
    write_boxes([larger], box_file)
    cases = list_training_cases(tiny_dataset, load_dataset_json(tiny_dataset))[0]
    assert changed_since_stage1(roots["preprocessed"] / "Dataset001_Tiny", cases) == ["case_002"]
    generate_pseudo_labels(PseudoLabelRequest("1", progress=False))
    remade = {c: (folder / f"case_00{c}.json").stat().st_mtime_ns for c in range(4)}
    assert [c for c in range(4) if remade[c] != made[c]] == [2]
    record = json.loads((folder / "case_002.json").read_text())
    assert record["settings"]["inputs"]["boxes"] == [box_file.stat().st_size, box_file.stat().st_mtime_ns]
    assert changed_since_stage1(roots["preprocessed"] / "Dataset001_Tiny", cases) == []


def test_continue_refuses_other_settings_and_redoes_edited_inputs(constant_trainer, tmp_path):
    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])
    inputs, output = tmp_path / "in", tmp_path / "out"
    for case_id in ("a", "b"):
        _write_input(inputs, case_id, ODD_GEOMETRY)
    arguments = ["-i", str(inputs), "-o", str(output), "-d", "1", "-c", "3d_fullres", "-tr", "ConstantTrainer",
                 "--quiet", "-np", "0"]
    predict_main(arguments)
    names = ("a.nii.gz", "b.nii.gz", "prediction_settings.json")
    written = {name: (output / name).stat().st_mtime_ns for name in names}
    used = json.loads((output / "prediction_settings.json").read_text())["precision"]  # auto: bf16 or fp32 here
    other = "fp32" if used == "bf16" else "bf16"
    for extra, difference in ((["--step-size", "0.75"], r"step_size 0.5 -> 0.75"),
                              (["--disable-tta"], r"mirroring True -> False"),
                              (["--precision", other], rf"precision '{used}' -> '{other}'"),
                              (["-chk", "checkpoint_best.pth"], r"checkpoints \['fold_0/checkpoint_final.pth'\] -> "
                                                                r"\['fold_0/checkpoint_best.pth'\]")):
        if extra[0] == "-chk":
            model = constant_trainer["results"] / "Dataset001_Tiny" / "ConstantTrainer__boxunetPlans__3d_fullres"
            final = model / "fold_0" / "checkpoint_final.pth"
            (model / "fold_0" / "checkpoint_best.pth").write_bytes(final.read_bytes())
        with pytest.raises(SystemExit, match=rf"--continue: the predictions in .*out were made with other settings "
                                             rf"\(.*{difference}"):
            predict_main(arguments + ["--continue"] + extra)
    assert {name: (output / name).stat().st_mtime_ns for name in written} == written, "nothing written"

    _rewrite(inputs / "b_0000.nii.gz", lambda image: image + 1)
    predict_main(arguments + ["--continue"])
    report = json.loads((output / "prediction_report.json").read_text())
    assert (report["skipped"], report["predicted"]) == (["a"], ["b"])
    assert (output / "a.nii.gz").stat().st_mtime_ns == written["a.nii.gz"]


def test_a_2d_image_is_refused_by_a_3d_dataset_and_a_3d_model(constant_trainer, tmp_path):
    dataset = write_tiny_dataset(constant_trainer["raw"], dataset_id=2)
    image, label = make_case_arrays(3, (1, 40, 36))
    flat = Geometry((999.0, 0.8, 0.8), (0.0, 0.0), (1, 0, 0, 1), (1, 40, 36), True)
    write_image(image, flat, dataset / "imagesTr" / "case_003_0000.nii.gz")
    write_image(label, flat, dataset / "labelsTr" / "case_003.nii.gz")
    with pytest.raises(DatasetError, match=r"case_003.*is a 2D image but 3 of the dataset's 4 cases are 3D"):
        verify_headers(dataset, load_dataset_json(dataset))

    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])
    inputs = tmp_path / "in"
    _write_input(inputs, "volume", ODD_GEOMETRY)
    write_image(image, flat, inputs / "slice_0000.nii.gz")
    with pytest.raises(SystemExit, match=r"case 'slice'.*is a 2D image but the model was trained on 3D images"):
        predict_main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                      "-tr", "ConstantTrainer", "--quiet"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_each_step_holds_its_output_folder(constant_trainer, tmp_path):
    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])
    _write_input(tmp_path / "in", "a", ODD_GEOMETRY)
    preprocessed = constant_trainer["preprocessed"] / "Dataset001_Tiny"
    held_by_me = rf"the .* of process {os.getpid()} is writing here"
    with exclusive_folder(tmp_path / "out", "prediction"):
        with pytest.raises(SystemExit, match=held_by_me):
            predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                          "-tr", "ConstantTrainer", "--quiet"])
    with exclusive_folder(preprocessed, "plan and preprocess run"):
        with pytest.raises(BoxunetError, match=held_by_me):
            plan_and_preprocess("1", OPTIONS)
    write_tiny_dataset(constant_trainer["raw"], dataset_id=3, num_cases=5, with_boxes=False)
    plan_tiny_3d_fullres("3")
    fold = constant_trainer["results"] / "Dataset003_Tiny" / "Trainer__boxunetPlans__3d_fullres" / "fold_0"
    with exclusive_folder(fold, "training"):
        with pytest.raises(BoxunetError, match=held_by_me):
            run_training(TrainingRequest("3", "3d_fullres", "0", get_trainer("Trainer"), device="cpu"))
    assert sorted(p.name for p in fold.iterdir()) == [".boxunet.lock"]


@pytest.mark.slow
def test_continue_before_the_first_checkpoint_keeps_the_options_the_run_started_with(dense_tiny):
    started = TrainingOptions(epochs=1, iterations_per_epoch=2, validation_iterations=1, augmentation_workers=0,
                              progress_bar=False, seed=5)
    folder = run_training(TrainingRequest("1", "3d_fullres", "0", get_trainer("Trainer"), device="cpu",
                                          options=started))
    for checkpoint in folder.glob("checkpoint_*.pth"):
        checkpoint.unlink()  # as if killed before the first checkpoint
    defaults = TrainingOptions(augmentation_workers=0, progress_bar=False)  # boxunet_train ... --c: 1000 x 250
    run_training(TrainingRequest("1", "3d_fullres", "0", get_trainer("Trainer"), device="cpu", options=defaults,
                                 continue_training=True))
    options = json.loads((folder / "debug.json").read_text())["options"]
    assert (options["epochs"], options["iterations_per_epoch"], options["seed"]) == (1, 2, 5)
    assert json.loads((folder / "run_options.json").read_text())["options"]["epochs"] == 1


def test_an_image_oriented_unlike_the_training_images_is_warned_about(constant_trainer, tmp_path, capsys):
    _constant_model(constant_trainer, [[0.0, 1.0, 0.0]])  # trained on images with the identity direction
    _write_input(tmp_path / "in", "odd", ODD_GEOMETRY)  # axes: x along world y, y along world x, z flipped
    _write_input(tmp_path / "in", "plain", replace(ODD_GEOMETRY, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)))
    capsys.readouterr()
    predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-d", "1", "-c", "3d_fullres",
                  "-tr", "ConstantTrainer", "--quiet", "-np", "0"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    odd_file = tmp_path / "in" / "odd_0000.nii.gz"
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: case 'odd', file {odd_file}: its axes are oriented [2, 1, -3]")
    assert "unlike every training image ([[1, 2, 3]])" in warnings[0]


def test_stored_label_maps_follow_their_raw_files_even_an_older_copy(dense_tiny):
    preprocessed = dense_tiny["preprocessed"] / "Dataset001_Tiny"
    plans = load_plans(preprocessed / "boxunet_plans.json")
    configuration = plans.configuration("3d_fullres")
    cases = PreprocessedCases(preprocessed / configuration.data_identifier, ["case_000", "case_001"])
    files = {c: preprocessed / "gt_segmentations" / f"{c}.nii.gz" for c in cases.case_ids}
    store = dense_tiny["preprocessed"] / "store"

    def stored_now():
        return store_raw_label_maps(store, cases, files, plans, configuration)
    assert stored_now() == ["case_000", "case_001"] and stored_now() == []
    before = files["case_001"].stat().st_mtime_ns
    _rewrite(files["case_001"], lambda label: np.where(label == 2, 1, label).astype(label.dtype))
    os.utime(files["case_001"], ns=(before - 10**9, before - 10**9))  # e.g. cp -p of an older version
    assert stored_now() == ["case_001"]
    assert not np.any(np.asarray(open_target(store, "case_001")[0]) == 2)
    (cases.folder / "case_000.json").write_text((cases.folder / "case_000.json").read_text())  # preprocessed again
    assert stored_now() == ["case_000"]
