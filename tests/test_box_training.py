"""The box trainers: fusion masks and weight maps ([Yang 2020] Eq. 5, 6), VWCE (Eq. 9), box samplers,
label maps on the preprocessed grid, and a tiny three-stage training end to end."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import plan_tiny_3d_fullres, two_intensity_volume, write_tiny_dataset

from boxunet.boxes.convcrf import CRFParameters
from boxunet.boxes.fusion import fusion_target, vote_counts, weight_map
from boxunet.boxes.pseudo_masks import PseudoMaskParameters, pseudo_masks
from boxunet.boxes.stage1 import PseudoLabelRequest, generate_pseudo_labels
from boxunet.cli.box_report import main as box_report_main
from boxunet.cli.train import main as train_main
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box, box_mask, boxes_from_label_map, read_boxes
from boxunet.io.images import read_image, write_image
from boxunet.planning.plans import load_plans
from boxunet.preprocessing.grid_labels import raw_labels_to_grid, write_target
from boxunet.trainers import get_trainer, trainer_for_dataset
from boxunet.training.box.losses import box_loss, correct_class_prior
from boxunet.training.box.options import BoxThreeStageOptions
from boxunet.training.box.samplers import BoxFillSampler, BoxIgnoreSampler, IgnoreBoxBackgroundSampler
from boxunet.training.box.stage2 import group_subsets
from boxunet.training.box.three_stage import BoxThreeStage
from boxunet.training.losses import WeightedCELoss
from boxunet.training.run import TrainingRequest, run_training
from boxunet.training.trainer import Trainer


def test_votes_and_weight_map_follow_equation_6():
    pseudo = np.array([[[0, 2, 2, 2, 0, 1]]])
    first = np.array([[[2, 2, 2, 0, 0, 2]]])
    second = np.array([[[0, 0, 2, 2, 2, 0]]])
    inside = np.array([[[True, True, True, True, True, False]]])  # the last voxel is outside every box
    votes = vote_counts(pseudo, [first, second], 2, inside)
    assert votes.tolist() == [[[1, 2, 3, 2, 1, 0]]]
    # K = 2 networks: where no mask votes, the weight is K + 1 = 3
    assert weight_map([votes], 2).tolist() == [[[1, 2, 3, 2, 1, 3]]]


def _fusion_parameters(**changes) -> PseudoMaskParameters:
    """No pairwise term, no appearance model, no tightness: the fused mask is where the prior logit is positive."""
    return PseudoMaskParameters(crf=CRFParameters(pairwise_weight=0.0), appearance_weight=0.0, tightness=False,
                                **changes)


def test_fusion_mask_raises_stage1_box_prior_by_the_share_of_networks():
    image = np.zeros((1, 1, 4, 8), np.float32)
    dense = np.zeros((1, 4, 8), np.int8)
    dense[0, 0, 3] = 1  # a kidney voxel inside the box stays kidney
    boxes = [Box(2, (0, 0, 1), (1, 3, 6))]  # ellipsoid radius^2 = ((y - 1) / 1.5)^2 + ((x - 3) / 2.5)^2
    pseudo = np.zeros((1, 4, 8), np.int8)
    pseudo[0, 2, 1] = 2  # a stage-1 voxel counts in the weights; the box prior that made the mask is refined
    first, second = np.zeros((2, 1, 4, 8), np.int8)
    first[0, 0, 1] = second[0, 0, 1] = 2  # corner, radius 1.041: prior 4 (1 - 1.041) - 0.5 = -0.66, + 1.0 -> in
    first[0, 2, 5] = 2  # the other corner with one vote of two: -0.66 + 0.5 -> out
    first[0, 3, 7] = 2  # outside the box: never tumor
    fused, weights = fusion_target(image, (1.0, 1.0, 1.0), dense, pseudo, [first, second], boxes, [2],
                                   _fusion_parameters(prior_logit=-0.5))
    expected = np.zeros((1, 4, 8), np.int8)
    expected[0, 1, 1:6] = 2  # radius <= 0.8: 4 (1 - 0.8) - 0.5 > 0
    expected[0, 0, [1, 2, 4]] = expected[0, 2, 2:5] = 2
    expected[0, 0, 3] = 1
    assert fused.tolist() == expected.tolist()
    assert weights[0, 0].tolist() == [3, 2, 3, 3, 3, 3, 3, 3]  # K = 2: votes inside the boxes, K + 1 elsewhere
    assert weights[0, 2].tolist() == [3, 1, 3, 3, 3, 1, 3, 3]


def test_fusion_mask_without_network_votes_is_the_stage1_mask():
    image, inner, spacing = two_intensity_volume()
    boxes = boxes_from_label_map(inner.astype(np.uint8), 1)
    dense = np.zeros(inner.shape, np.int8)
    parameters = PseudoMaskParameters()
    stage1 = pseudo_masks(image, spacing, boxes, [1], dense, parameters=parameters)
    silent = np.zeros_like(stage1)
    fused, weights = fusion_target(image, spacing, dense, stage1, [silent, silent], boxes, [1], parameters)
    assert (stage1 == 1).sum() > 100 and np.array_equal(fused, stage1)
    assert set(np.unique(weights[stage1 == 1])) == {1}


def test_fusion_without_network_votes_keeps_stage1s_more_probable_label_in_nested_boxes():
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (16, 32, 32)], indexing="ij")
    organ = ((z - 8) / 6) ** 2 + ((y - 16) / 12) ** 2 + ((x - 16) / 10) ** 2 < 1
    tumor = ((z - 8) / 3) ** 2 + ((y - 18) / 4) ** 2 + ((x - 15) / 4) ** 2 < 1
    labels = np.where(tumor, 2, np.where(organ, 1, 0)).astype(np.uint8)
    intensity = np.where(tumor, 0.3, organ.astype(np.float32))  # a dark tumor in a bright organ
    image = (intensity + np.random.default_rng(1).normal(0, 0.15, labels.shape))[None].astype(np.float32)
    boxes = boxes_from_label_map((labels > 0).astype(np.uint8), 1) + boxes_from_label_map(labels, 2)
    dense = np.zeros(labels.shape, np.int8)
    parameters = PseudoMaskParameters()
    stage1 = pseudo_masks(image, (1.0, 1.0, 1.0), boxes, [1, 2], dense, parameters=parameters)
    # stage 1 gives the overlap to the more probable label: part of the tumor, inside the organ's box too
    assert 20 < ((stage1 == 2) & tumor).sum() and ((stage1 == 2) & box_mask(tumor.shape, boxes, 1)).any()
    silent = np.zeros_like(stage1)
    fused, _ = fusion_target(image, (1.0, 1.0, 1.0), dense, stage1, [silent], boxes, [1, 2], parameters)
    assert np.array_equal(fused, stage1), "the organ's box does not overwrite the tumor"


def test_fusion_mask_after_boxfill_is_the_union_inside_the_boxes():
    image = np.zeros((1, 1, 4, 8), np.float32)
    dense = np.zeros((1, 4, 8), np.int8)
    dense[0, 0, 3] = 1
    pseudo = np.zeros((1, 4, 8), np.int8)
    pseudo[0, 1, 2:4] = 2
    prediction = np.zeros((1, 4, 8), np.int8)
    prediction[0, 1:3, 3:6] = 2
    prediction[0, 3, 7] = 2  # outside the box: never tumor
    boxes = [Box(2, (0, 0, 1), (1, 3, 6))]
    fused, weights = fusion_target(image, (1.0, 1.0, 1.0), dense, pseudo, [prediction], boxes, [2],
                                   _fusion_parameters(), stage1_method="boxfill")
    expected = np.zeros((1, 4, 8), np.int8)
    expected[0, 1, 2:6] = 2
    expected[0, 2, 3:6] = 2
    expected[0, 0, 3] = 1
    assert fused.tolist() == expected.tolist()
    assert weights[0, 1].tolist() == [2, 2, 1, 2, 1, 1, 2, 2]  # votes 1 or 2 inside the union, K + 1 = 2 elsewhere


def test_class_prior_correction_undoes_the_class_weights():
    # background weight 0.2: the weighted-CE optimum is softmax proportional to (0.2 p0, p1); p1 = 0.25 gives
    # outputs (0.15, 0.25) / 0.4, which the raw argmax calls tumor; after the correction p1 = 0.25 again
    raw = torch.log(torch.tensor([0.15, 0.25]) / 0.4).reshape(2, 1, 1, 1)
    corrected = correct_class_prior(raw)
    assert torch.allclose(corrected[0] - raw[0], torch.tensor(np.log(5.0), dtype=torch.float32))
    assert torch.equal(corrected[1], raw[1])
    assert torch.allclose(corrected.softmax(0).flatten(), torch.tensor([0.75, 0.25]))
    assert raw.argmax(0).item() == 1 and corrected.argmax(0).item() == 0
    batch = raw.reshape(1, 2, 1, 1, 1).expand(3, 2, 1, 1, 1)  # (B, K, ...) as validation sees it
    assert torch.equal(BoxThreeStage.decision_logits(batch, 1)[2, :, 0, 0, 0], corrected.flatten())
    assert torch.equal(Trainer.decision_logits(batch, 1), batch), "trainers without class weights keep the logits"


def test_box_three_stage_predictions_are_prior_corrected():
    network = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        network.weight.zero_()
        network.bias.copy_(torch.tensor([0.0, 1.0]))  # p(label) = 0.73 before, 0.35 after the correction
    configuration, data = SimpleNamespace(patch_size=(4, 4, 4)), torch.zeros(1, 4, 4, 4)
    arguments = (configuration, 2, (), 0.5, torch.device("cpu"), "fp32")
    plain, _ = Trainer.predict_preprocessed([network], data, *arguments)
    corrected, _ = BoxThreeStage.predict_preprocessed([network], data, *arguments)
    assert torch.allclose(plain[:, 0, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(corrected[:, 0, 0, 0], torch.tensor([float(np.log(5.0)), 1.0]), atol=1e-6)
    assert (plain.argmax(0) == 1).all() and (corrected.argmax(0) == 0).all()


def test_vwce_equals_hand_computed_values():
    # two voxels, two classes; logits (0, ln 3) -> p(1) = 0.75; logits (ln 4, 0) -> p(0) = 0.8
    logits = torch.tensor([[[0.0, np.log(4.0)], [np.log(3.0), 0.0]]]).reshape(1, 2, 2, 1, 1)
    target = torch.tensor([1, 0]).reshape(1, 1, 2, 1, 1)
    weights = torch.tensor([3.0, 2.0]).reshape(1, 1, 2, 1, 1)
    loss = WeightedCELoss([0.2, 1.0])
    # WCE: (1.0 * -ln 0.75 + 0.2 * -ln 0.8) / 2
    assert float(loss(logits, target)) == pytest.approx((-np.log(0.75) - 0.2 * np.log(0.8)) / 2, rel=1e-6)
    # VWCE: (3 * 1.0 * -ln 0.75 + 2 * 0.2 * -ln 0.8) / 2
    assert float(loss(logits, target, voxel_weights=weights)) == pytest.approx(
        (-3 * np.log(0.75) - 0.4 * np.log(0.8)) / 2, rel=1e-6)


def test_vwce_dice_adds_the_weighted_soft_dice_of_the_labels():
    logits = torch.tensor([[[0.0, np.log(4.0)], [np.log(3.0), 0.0]]]).reshape(1, 2, 2, 1, 1)
    target = torch.tensor([1, 0]).reshape(1, 1, 2, 1, 1)
    weights = torch.tensor([3.0, 2.0]).reshape(1, 1, 2, 1, 1)
    # label 1: p = (0.75, 0.2); tp = 3 * 0.75, fp = 2 * 0.2, fn = 3 * 0.25 -> Dice 4.5 / 5.65
    expected = (-3 * np.log(0.75) - 0.4 * np.log(0.8)) / 2 - 4.5 / 5.65
    loss = box_loss("vwce_dice", num_classes=2, batch_dice=True)
    assert float(loss(logits, target, voxel_weights=weights)) == pytest.approx(expected, rel=1e-5)
    assert isinstance(box_loss("wce", 2, True), WeightedCELoss)
    with pytest.raises(BoxunetError, match="--loss 'dice'"):
        box_loss("dice", 2, True)


def test_group_subsets_are_disjoint_and_cover_the_fold():
    cases = [f"c{i}" for i in range(10)]
    subsets = group_subsets(cases, 3, seed=1)
    assert sorted(sum(subsets, [])) == sorted(cases) and [len(s) for s in subsets] == [4, 3, 3]
    assert subsets == group_subsets(list(reversed(cases)), 3, seed=1)


class _FakeCases:
    case_ids = ["a"]


def test_box_samplers_fill_or_ignore_box_voxels():
    seg = np.zeros((1, 4, 6, 6), np.int8)
    seg[0, :, 0, :] = 1  # dense kidney row
    properties = {"case_id": "a", "boxes": [{"label": 2, "min": [1, 0, 2], "max": [3, 3, 8]}]}
    region = [(0, 4), (0, 6), (2, 8)]  # the patch starts at x = 2: the box covers x 0..5 of it
    filled = BoxFillSampler(_FakeCases(), 1, (4, 6, 6)).seg_channels(seg, properties, region)
    assert filled.shape == (1, 4, 6, 6)
    assert (filled[0, 1:3, 1:3, :] == 2).all() and (filled[0, 1:3, 0, :] == 1).all()
    assert (filled[0, 0] != 2).all() and (filled[0, :, 3:] == 0).all()
    ignored = BoxIgnoreSampler(_FakeCases(), 1, (4, 6, 6)).seg_channels(seg, properties, region)
    assert ignored.shape == (2, 4, 6, 6)
    assert ignored[1].sum() == ignored[1].size - 2 * 2 * 6  # unknown: box voxels without a dense label
    assert (ignored[1, 1:3, 1:3] == 0).all() and (ignored[1, 1:3, 0] == 1).all()


def test_ignore_box_background_sampler_trusts_the_stored_foreground_only(tmp_path):
    seg = np.zeros((1, 4, 6, 6), np.int8)
    properties = {"case_id": "a", "boxes": [{"label": 2, "min": [1, 0, 2], "max": [3, 3, 8]}]}
    region = [(0, 4), (0, 6), (2, 8)]
    stored = np.zeros((4, 6, 8), np.int8)
    stored[1:3, 1, 3:6] = 2  # the pseudo mask's tumor inside the box (x 3..5 of the case)
    write_target(tmp_path, "a", stored, None, (4, 6, 6))
    channels = IgnoreBoxBackgroundSampler(_FakeCases(), 1, (4, 6, 6), target_folder=tmp_path).seg_channels(
        seg, properties, region)
    assert channels.shape == (2, 4, 6, 6) and (channels[0] == 2).sum() == 2 * 3
    # unknown: the box's voxels in the patch (2 x 3 x 6) except the pseudo mask's tumor (2 x 3)
    assert channels[1].sum() == channels[1].size - (2 * 3 * 6 - 2 * 3)
    assert (channels[1][channels[0] == 2] == 1).all()


def test_raw_labels_reach_the_grid_like_preprocessed_labels(roots):
    write_tiny_dataset(roots["raw"], num_cases=5)
    plan_tiny_3d_fullres()
    from boxunet.preprocessing.storage import load_case
    folder = roots["preprocessed"] / "Dataset001_Tiny"
    plans = load_plans(folder / "boxunet_plans.json")
    configuration = plans.configuration("3d_fullres")
    _, seg, properties = load_case(folder / configuration.data_identifier, "case_001")
    raw = read_image(roots["raw"] / "Dataset001_Tiny" / "labelsTr" / "case_001.nii.gz")[0]
    grid = raw_labels_to_grid(raw, properties, plans, configuration)
    assert list(grid.shape) == properties["shape_after_resampling"]
    stored = np.asarray(seg[0])
    assert np.array_equal(grid == 1, stored == 1), "kidney mapped exactly as preprocessing maps it"
    assert (grid == 2).sum() > 0 and not (stored == 2).any(), "box labels only through this mapping"


@pytest.fixture
def box_dataset(roots):
    write_tiny_dataset(roots["raw"], num_cases=6, shape=(16, 48, 40))
    plan_tiny_3d_fullres()
    return roots


def _request(trainer: str, **options) -> TrainingRequest:
    settings = dict(epochs=1, iterations_per_epoch=2, validation_iterations=1, augmentation_workers=0,
                    save_every=1, progress_bar=False)
    settings.update(options)
    trainer_class = get_trainer(trainer)
    return TrainingRequest("1", "3d_fullres", "0", trainer_class, device="cpu",
                           options=trainer_class.options_class(**settings))


@pytest.mark.slow
def test_three_stage_training_end_to_end(box_dataset, capsys):
    folder = run_training(_request("BoxThreeStage", group_networks=2, group_epochs=1))
    for name in ("checkpoint_final.pth", "box_report.json", "validation/summary.json",
                 "stage2/group_0/checkpoint_final.pth", "stage2/group_1/checkpoint_final.pth"):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "box_report.json").read_text())
    assert report["loss"] == "vwce" and report["group_networks"] == 2 and len(report["cases"]) == 4
    assert report["resolution"] == "raw", "scored where stage 1 and fusion make their masks"
    assert set(report["seconds_per_case"]) == {"stage1", "fusion"}
    assert all(set(row["seconds"]) == {"stage1", "fusion"} for row in report["cases"])
    mean = report["mean"]["2"]
    assert mean["dice_stage1"] > mean["dice_boxes"], "pseudo masks beat the boxes"
    assert 0.0 <= mean["dice_fusion"] <= 1.0
    # boxunet_box_report prints them, with the test Dice of an evaluation summary (here the validation's)
    box_report_main(["-d", "1", "--test", str(folder / "validation")])
    lines = capsys.readouterr().out.splitlines()
    validation = json.loads((folder / "validation" / "summary.json").read_text())["mean"]["2"]["Dice"]
    assert lines[0].split() == ["label", "boxes", "stage-1", "masks", "fusion", "masks", "test,", "trained", "model"]
    assert lines[1].split() == ["tumor"] + [f"{v:.3f}" for v in (mean["dice_boxes"], mean["dice_stage1"],
                                                                  mean["dice_fusion"], validation)]
    assert lines[2].endswith(str(folder / "box_report.json")) and "4 training cases of fold 0" in lines[2]
    stage1 = box_dataset["preprocessed"] / "Dataset001_Tiny" / "pseudo_labels" / "stage1"
    assert (stage1 / "report.json").is_file(), "missing stage-1 pseudo labels are made on the way"
    fusion = sorted(p.name for p in (folder / "stage2" / "fusion").glob("*_target.b2nd"))
    assert len(fusion) == 6  # 4 training cases (fusion) + 2 validation cases (stage-1 targets)
    # fusion runs at the raw resolution: label and weight maps with each raw image's geometry, then the grid
    raw = box_dataset["raw"] / "Dataset001_Tiny"
    for case_id in (row["case_id"] for row in report["cases"]):
        labels, geometry = read_image(folder / "stage2" / "fusion" / f"{case_id}.nii.gz")
        weights, weight_geometry = read_image(folder / "stage2" / "fusion" / f"{case_id}_weights.nii.gz")
        raw_geometry = read_image(raw / "imagesTr" / f"{case_id}_0000.nii.gz")[1]
        assert geometry == raw_geometry and weight_geometry == raw_geometry
        assert set(np.unique(weights).tolist()) <= {1, 2, 3}  # votes of the K + 1 = 3 masks; 3 where none says tumor
        boxes = box_mask(labels.shape, read_boxes(raw / "boxesTr" / f"{case_id}.json"), 2)
        assert (labels == 2).any() and not ((labels == 2) & ~boxes).any(), "fusion masks stay inside the boxes"
        assert (folder / "stage2" / "fusion" / "pictures" / f"{case_id}.png").is_file()
    # resuming finds every stage done and only extends the final network
    stamp = (folder / "stage2" / "group_0" / "checkpoint_final.pth").stat().st_mtime_ns
    fusion_file = sorted((folder / "stage2" / "fusion").glob("*_target.b2nd"))[0]
    fusion_stamp = fusion_file.stat().st_mtime_ns
    run_training(_request("BoxThreeStage", group_networks=2, group_epochs=1, epochs=2))
    assert (folder / "stage2" / "group_0" / "checkpoint_final.pth").stat().st_mtime_ns == stamp
    assert fusion_file.stat().st_mtime_ns == fusion_stamp
    resumed = json.loads((folder / "box_report.json").read_text())
    assert resumed["seconds_per_case"] == report["seconds_per_case"], "timings survive a resumed run"
    # fusion masks made with other settings are made anew, without retraining the group networks
    fusion_record = folder / "stage2" / "fusion" / "settings.json"
    settings = json.loads(fusion_record.read_text())
    assert settings["fusion_prior"]["stage1_method"] == "convcrf" and settings["fusion_prior"]["network_logit"] == 1.0
    fusion_record.write_text(json.dumps({**settings, "fusion_prior": {"network_logit": -1.0}}))
    run_training(_request("BoxThreeStage", group_networks=2, group_epochs=1, epochs=3))
    assert (folder / "stage2" / "group_0" / "checkpoint_final.pth").stat().st_mtime_ns == stamp
    assert json.loads(fusion_record.read_text()) == settings
    assert fusion_file.stat().st_mtime_ns != fusion_stamp


@pytest.mark.slow
def test_stage2_needs_the_raw_dataset_and_says_so_before_training_group_networks(box_dataset):
    generate_pseudo_labels(PseudoLabelRequest("1", progress=False))
    raw = box_dataset["raw"] / "Dataset001_Tiny"
    raw.rename(raw.with_name("moved_away"))
    with pytest.raises(BoxunetError, match="raw resolution, like stage 1, and needs the raw dataset"):
        run_training(_request("BoxThreeStage", group_networks=2, group_epochs=1))
    results = box_dataset["results"] / "Dataset001_Tiny"
    assert not list(results.rglob("checkpoint_*.pth")), "no group network trained"


def _erase_dense_tumor_labels(roots) -> Path:
    """Boxes only: the tumor voxels of the raw and reference label maps lose their label; the preprocessed folder."""
    dataset = roots["preprocessed"] / "Dataset001_Tiny"
    for folder in (roots["raw"] / "Dataset001_Tiny" / "labelsTr", dataset / "gt_segmentations"):
        for path in folder.glob("*.nii.gz"):
            labels, geometry = read_image(path)
            write_image(np.where(labels == 2, 0, labels).astype(np.uint8), geometry, path)
    return dataset


@pytest.mark.parametrize("references", ["without tumor labels", "missing"])
@pytest.mark.slow
def test_without_dense_box_labels_validation_scores_agreement_with_stage1_masks(box_dataset, references):
    if references == "missing":  # e.g. a boxes-only dataset without labelsTr
        dataset = box_dataset["preprocessed"] / "Dataset001_Tiny"
        for path in (dataset / "gt_segmentations").glob("*.nii.gz"):
            path.unlink()
    else:
        dataset = _erase_dense_tumor_labels(box_dataset)
    folder = run_training(_request("BoxThreeStage", group_networks=0))
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert summary["reference_folder"] == str(dataset / "pseudo_labels" / "stage1")
    assert json.loads((folder / "box_report.json").read_text())["loss"] == "wce"
    assert 0.0 <= summary["mean"]["2"]["Dice"] <= 1.0 or np.isnan(summary["mean"]["2"]["Dice"])


@pytest.mark.slow
def test_a_baseline_without_any_validation_reference_says_so_before_training(box_dataset):
    _erase_dense_tumor_labels(box_dataset)  # and no stage-1 masks: BoxFill does not make them
    with pytest.raises(BoxunetError, match=r"case_\d+.*run boxunet_pseudo_labels -d Dataset001_Tiny first"):
        run_training(_request("BoxFill"))
    assert not list((box_dataset["results"] / "Dataset001_Tiny").rglob("checkpoint_*.pth"))


@pytest.mark.parametrize("trainer", ["BoxFill", "BoxIgnore", "FullySupervised", "PseudoMaskIgnoreBoxBackground"])
@pytest.mark.slow
def test_baseline_box_trainers_run(box_dataset, trainer):
    folder = run_training(_request(trainer))
    assert (folder / "validation" / "summary.json").is_file()


@pytest.mark.slow
def test_box_datasets_default_to_the_three_stage_trainer(box_dataset):
    from boxunet.training.run import dataset_plans, prepare
    trainer_class = trainer_for_dataset(None, dataset_plans("1", "boxunetPlans")[1].box_labels)
    setup = prepare(TrainingRequest("1", "3d_fullres", "0", trainer_class, device="cpu"))
    assert trainer_class.__name__ == "BoxThreeStage"
    assert setup.output.parent.name == "BoxThreeStage__boxunetPlans__3d_fullres"

    def trainer(**options):
        return trainer_class(setup, BoxThreeStageOptions(**options))
    # the group networks' epochs are fixed when a run starts: `--c --epochs N` later leaves stage 2 alone
    assert trainer(epochs=7).options.group_epochs == 7
    assert trainer(epochs=7, group_epochs=3).options.group_epochs == 3
    with pytest.raises(BoxunetError, match="--k -1"):
        trainer(group_networks=-1)
    with pytest.raises(BoxunetError, match="--group-epochs 0: give at least 1"):
        trainer(group_epochs=0)
    fold = setup.output
    with pytest.raises(SystemExit, match=r"--epochs 0 \(at least 1\), --save-every 0 \(at least 1\)$"):
        train_main(["1", "3d_fullres", "1", "--epochs", "0", "--save-every", "0", "-device", "cpu"])
    assert not (fold.parent / "fold_1").exists(), "refused before the fold's folder is made"
    with pytest.raises(SystemExit, match="--k --loss: BoxFill does not use them"):
        train_main(["1", "3d_fullres", "0", "-tr", "BoxFill", "--k", "0", "--loss", "wce", "-device", "cpu"])


def test_convcrf_benchmark_reports_speed_and_memory(capsys):
    from boxunet.cli.benchmark import main as benchmark_main
    benchmark_main(["convcrf", "--shape", "8", "16", "16", "--repeats", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "convcrf" and summary["window_radius"] == [3, 3, 3]
    expected = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    assert list(summary["devices"]) == expected, "the CPU, and CUDA when present"
    cpu = summary["devices"]["cpu"]
    assert len(cpu["seconds"]) == 2 and cpu["voxels_per_second"] > 0
