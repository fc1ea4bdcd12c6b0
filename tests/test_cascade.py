"""The 3d_lowres -> 3d_cascade_fullres cascade: planning, previous-stage channels, leak guard, one-command prediction."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import narrow_networks, write_tiny_dataset

from boxunet.cli.predict import main as predict_main
from boxunet.errors import BoxunetError
from boxunet.io.images import read_image, write_image
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
from boxunet.planning.plans import load_plans
from boxunet.preprocessing.grid_labels import open_target
from boxunet.preprocessing.previous_stage import network_input_channels, one_hot
from boxunet.trainers import get_trainer
from boxunet.training.data.previous_stage import PreviousStageToData, dilate, erode, remove_random_component
from boxunet.training.run import TrainingRequest, run_training


def test_morphology_and_component_removal_on_hand_made_masks():
    point = np.zeros((5, 5, 5), bool)
    point[2, 2, 2] = True
    assert dilate(point, 1).sum() == 7  # the centre and its 6 face neighbours
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    assert erode(cube, 1).sum() == 27 and erode(cube, 1)[2:5, 2:5, 2:5].all()
    full = np.ones((4, 4, 4), bool)
    assert erode(full, 1).sum() == 8, "outside the patch counts as background"
    channels = np.zeros((1, 10, 10, 10), np.float32)
    channels[0, :5] = 1  # 500 voxels: over 15 % of the patch, never removed
    channels[0, 8, 8, 8] = 1  # a one-voxel component: the only one that may go
    remove_random_component(channels)
    assert channels.sum() == 500


def test_previous_stage_moves_into_data_one_hot():
    seg = np.zeros((2, 2, 4, 4, 4), np.float32)
    seg[:, 1, 1, 1, 1] = 2
    seg[:, 1, 2, 2, 2] = 1
    batch = PreviousStageToData([1, 2], perturb=False)(data=np.zeros((2, 1, 4, 4, 4), np.float32), seg=seg)
    assert batch["data"].shape == (2, 3, 4, 4, 4) and batch["seg"].shape == (2, 1, 4, 4, 4)
    assert batch["data"][0, 1].sum() == 1 and batch["data"][0, 1, 2, 2, 2] == 1
    assert batch["data"][0, 2].sum() == 1 and batch["data"][0, 2, 1, 1, 1] == 1
    assert one_hot(np.array([[0, 1], [2, 2]]), [1, 2]).sum(axis=(1, 2)).tolist() == [1.0, 2.0]


def _train(configuration: str, fold: int, trainer: str = "Trainer", **options):
    trainer_class = get_trainer(trainer)
    options = trainer_class.options_class(**dict(dict(epochs=1, iterations_per_epoch=2, validation_iterations=1,
                                                      augmentation_workers=0, save_every=1, progress_bar=False),
                                                 **options))
    return run_training(TrainingRequest("1", configuration, str(fold), trainer_class, device="cpu", options=options))


def _cascade_dataset(roots, with_boxes: bool):
    write_tiny_dataset(roots["raw"], num_cases=6, shape=(16, 48, 40), with_boxes=with_boxes)
    plan_and_preprocess("1", PlanAndPreprocessOptions(configurations=["3d_fullres", "3d_lowres"], gpu_memory_gb=0.25,
                                                      num_processes=1, progress=False, force_cascade=True))
    narrow_networks()
    folder = roots["preprocessed"] / "Dataset001_Tiny"
    cases = [f"case_{i:03d}" for i in range(6)]
    splits = [{"train": cases[3:], "val": cases[:3]}, {"train": cases[:3], "val": cases[3:]}]
    (folder / "splits_final.json").write_text(json.dumps(splits))
    return roots


@pytest.fixture
def cascade_dataset(roots):
    return _cascade_dataset(roots, with_boxes=False)


@pytest.mark.slow
def test_lowres_to_cascade_end_to_end(cascade_dataset, tmp_path):
    roots = cascade_dataset
    plans = load_plans(roots["preprocessed"] / "Dataset001_Tiny" / "boxunet_plans.json")
    cascade, lowres = plans.configuration("3d_cascade_fullres"), plans.configuration("3d_lowres")
    assert cascade.previous_stage == "3d_lowres" and lowres.next_stage == "3d_cascade_fullres"
    full_voxels = np.prod(plans.configuration("3d_fullres").median_image_size_in_voxels)
    assert full_voxels / np.prod(lowres.median_image_size_in_voxels) >= 2.0
    assert network_input_channels(plans, cascade) == 3  # CT + kidney + tumor

    _train("3d_lowres", 0)
    # leak guard: fold 0 of the cascade trains on cases 3-5, which only lowres fold 1 held out
    with pytest.raises(BoxunetError, match=r"3d_lowres fold\(s\) 1 first: boxunet_train 001 3d_lowres 1"):
        _train("3d_cascade_fullres", 0)
    assert not (roots["results"] / "Dataset001_Tiny" / "Trainer__boxunetPlans__3d_cascade_fullres").exists()
    _train("3d_lowres", 1)
    lowres_folder = roots["results"] / "Dataset001_Tiny" / "Trainer__boxunetPlans__3d_lowres"
    # a stale prediction of a case by a fold that trained on it must never be used
    shutil.copy(lowres_folder / "fold_1" / "validation" / "case_003.nii.gz",
                lowres_folder / "fold_0" / "validation" / "case_004.nii.gz")
    for fold in (0, 1):
        output = _train("3d_cascade_fullres", fold)
        assert (output / "validation" / "summary.json").is_file()

    (lowres_folder / "fold_0" / "validation" / "case_004.nii.gz").unlink()  # cross-validation would refuse it

    # cross-validation compares the cascade with its lowres stage; the cascade predicts with one command
    from boxunet.cli.find_best_configuration import main as find_best_main
    find_best_main(["1", "-c", "3d_lowres", "3d_cascade_fullres", "-tr", "Trainer", "-f", "0", "1",
                    "--disable-ensembling", "-np", "1"])
    information = json.loads((roots["results"] / "Dataset001_Tiny" / "inference_information.json").read_text())
    assert set(information["candidates"]) == {"Trainer__boxunetPlans__3d_lowres",
                                              "Trainer__boxunetPlans__3d_cascade_fullres"}
    best_configuration = information["best"]["name"].split("__")[-1]
    commands = " ".join(information["commands"])
    assert f"-c {best_configuration}" in commands and "--prev-stage-predictions" not in commands

    store = next((roots["preprocessed"] / "Dataset001_Tiny" / "previous_stage").iterdir())
    assert store.name == "Trainer__boxunetPlans__3d_lowres_on_boxunetPlans_3d_fullres"
    from boxunet.preprocessing.grid_labels import raw_labels_to_grid
    from boxunet.training.data.dataset import PreprocessedCases
    properties = PreprocessedCases(roots["preprocessed"] / "Dataset001_Tiny" / cascade.data_identifier,
                                   ["case_004"]).load("case_004")[2]
    held_out = read_image(lowres_folder / "fold_1" / "validation" / "case_004.nii.gz")[0]
    assert np.array_equal(np.asarray(open_target(store, "case_004")[0]),
                          raw_labels_to_grid(held_out, properties, plans, cascade))

    # a lowres fold that is being retrained (debug.json newer than its final checkpoint) no longer counts
    final = lowres_folder / "fold_1" / "checkpoint_final.pth"
    os.utime(lowres_folder / "fold_1" / "debug.json", ns=(final.stat().st_mtime_ns + 10 ** 9,) * 2)
    with pytest.raises(BoxunetError, match=r"fold\(s\) 1 first"):
        _train("3d_cascade_fullres", 1)

    # one command: the lowres stage runs first, then the cascade
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case_id in ("case_000", "case_005"):
        shutil.copy(roots["raw"] / "Dataset001_Tiny" / "imagesTr" / f"{case_id}_0000.nii.gz", inputs)
    output = tmp_path / "out"
    predict_main(["-i", str(inputs), "-o", str(output), "-d", "1", "-c", "3d_cascade_fullres", "-tr", "Trainer",
                  "--quiet", "-np", "0", "--disable-tta"])
    for case_id in ("case_000", "case_005"):
        labels, geometry = read_image(output / f"{case_id}.nii.gz")
        assert geometry.shape == (16, 48, 40) and set(np.unique(labels)) <= {0, 1, 2}
        assert (output / "previous_stage_3d_lowres" / f"{case_id}.nii.gz").is_file()
    settings = json.loads((output / "prediction_settings.json").read_text())
    assert settings["previous_stage_folder"] == str(output / "previous_stage_3d_lowres")

    # a previous-stage segmentation that does not fit the image is refused, naming case and file
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    labels, geometry = read_image(output / "previous_stage_3d_lowres" / "case_000.nii.gz")
    write_image(labels[:-1], geometry.__class__(geometry.spacing, geometry.origin, geometry.direction,
                                                labels[:-1].shape), wrong / "case_000.nii.gz")
    shutil.copy(output / "previous_stage_3d_lowres" / "case_005.nii.gz", wrong)
    with pytest.raises(SystemExit):
        predict_main(["-i", str(inputs), "-o", str(tmp_path / "out2"), "-d", "1", "-c", "3d_cascade_fullres",
                      "-tr", "Trainer", "--quiet", "-np", "0", "--disable-tta", "--prev-stage-predictions", str(wrong)])
    report = json.loads((tmp_path / "out2" / "prediction_report.json").read_text())
    assert report["predicted"] == ["case_005"] and report["failed"][0]["case"] == "case_000"
    assert "previous-stage segmentation" in report["failed"][0]["error"] and "case_000" in report["failed"][0]["error"]


@pytest.mark.slow
def test_box_dataset_cascade_feeds_the_lowres_box_model_to_every_stage(roots):
    _cascade_dataset(roots, with_boxes=True)
    for fold in (0, 1):
        _train("3d_lowres", fold, "BoxThreeStage", group_networks=0)
    output = _train("3d_cascade_fullres", 0, "BoxThreeStage", group_networks=2, group_epochs=1)
    # the group networks and the final network all take CT + the two one-hot lowres channels
    import torch
    for checkpoint in (output / "stage2" / "group_0" / "checkpoint_final.pth", output / "checkpoint_final.pth"):
        weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        first_convolution = next(v for k, v in weights.items() if k.endswith("weight") and v.ndim == 5)
        assert first_convolution.shape[1] == 3, checkpoint
    report = json.loads((output / "box_report.json").read_text())
    assert report["group_networks"] == 2 and len(report["cases"]) == 3
