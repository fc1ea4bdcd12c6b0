"""The KiTS variants' building blocks on hand-made data, and a tiny end-to-end run of the 2-step head."""
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import plan_tiny_3d_fullres, write_tiny_dataset
from torch import nn

from boxunet.cli.evaluate import main as evaluate_main
from boxunet.cli.predict import main as predict_main
from boxunet.errors import BoxunetError
from boxunet.evaluation.case_classification import classification_summary
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import read_image
from boxunet.kits.coarse_to_fine import KiTSCoarseToFine
from boxunet.kits.components import keep_connected_to, remove_small_slice_components
from boxunet.kits.grids import crop_boxes
from boxunet.kits.heatmaps import boundary_heatmap, landmark_heatmaps
from boxunet.kits.kidney_count import MIN_KIDNEY_VOLUME_ML, kidney_check, kidney_components
from boxunet.kits.label_assignment import assign_labels
from boxunet.kits.localization import choose_box, landmark_box, scale_box
from boxunet.kits.localization_ensemble import KiTSLocalizationEnsemble
from boxunet.kits.stages import PredictionRun, kits_label_values
from boxunet.kits.two_step_trainer import majority_class
from boxunet.nets.two_step import TwoStepUNet
from boxunet.planning.plans import ArchitecturePlan
from boxunet.preprocessing.case import class_locations
from boxunet.preprocessing.storage import save_case
from boxunet.trainers import get_trainer
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.data.sampler import ClassBalancedSampler
from boxunet.training.losses import (AuxiliaryHeadLoss, DeepSupervisionLoss, DiceCELoss,
                                     binary_cross_entropy_of_foreground, cross_entropy, weighted_mse)
from boxunet.training.options import TrainingOptions
from boxunet.training.run import TrainingRequest, run_training


# ------------------------------------------------------------------------------ label assignment ([Zhang 2019])
@pytest.mark.parametrize("kt,k,t", list(itertools.product((0, 1), repeat=3)))
def test_label_assignment_truth_table(kt, k, t):
    expected = {(0, 0, 0): 0, (0, 0, 1): 0, (0, 1, 0): 0, (0, 1, 1): 0,
                (1, 0, 0): 0, (1, 1, 0): 1, (1, 0, 1): 2, (1, 1, 1): 2}[(kt, k, t)]
    masks = [np.full((2, 2, 2), bool(v)) for v in (kt, k, t)]
    assert np.all(assign_labels(*masks) == expected)
    assert np.all(assign_labels(*masks, kidney_label=3, tumor_label=5) == {0: 0, 1: 3, 2: 5}[expected])


def test_label_assignment_checks_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        assign_labels(np.ones(3), np.ones(3), np.ones(4))


# ------------------------------------------------------------------------------ heatmaps and WMSE ([Zhang 2019])
def test_landmark_heatmaps_peak_at_each_kidneys_extreme_pixels():
    mask = np.zeros((3, 30, 40), bool)
    mask[1, 5:10, 4:9] = True        # kidney A: rows 5..9, columns 4..8
    mask[1, 12:21, 25:30] = True     # kidney B: rows 12..20, columns 25..29
    heatmaps = landmark_heatmaps(mask, sigma=1.0)
    assert heatmaps.shape == (5, 3, 30, 40) and heatmaps.dtype == np.float32
    assert heatmaps[:, 0].max() == 0 and heatmaps[:, 2].max() == 0
    expected = {"left": [(7, 4), (16, 25)], "top": [(5, 6), (12, 27)], "right": [(7, 8), (16, 29)],
                "bottom": [(9, 6), (20, 27)], "center": [(7, 6), (16, 27)]}
    for channel, points in enumerate(expected.values()):
        slice_ = heatmaps[channel, 1]
        neighbourhood_max = [[slice_[max(0, y - 1):y + 2, max(0, x - 1):x + 2].max() for x in range(40)]
                             for y in range(30)]
        local_maxima = [(y, x) for y in range(30) for x in range(40)
                        if slice_[y, x] > 0.5 and slice_[y, x] == neighbourhood_max[y][x]]
        assert sorted(local_maxima) == points
        assert slice_.max() == pytest.approx(1.0)


def test_boundary_heatmap_is_the_smoothed_in_slice_outline():
    mask = np.zeros((2, 30, 30), bool)
    mask[0, 5:17, 5:17] = True
    heatmap = boundary_heatmap(mask, sigma=1.0)
    assert heatmap.shape == (1, 2, 30, 30)
    assert heatmap[0, 0].max() == pytest.approx(1.0) and heatmap[0, 1].max() == 0
    assert heatmap[0, 0, 5, 10] > heatmap[0, 0, 8, 10] > heatmap[0, 0, 11, 11] == 0  # outline > near it > centre
    assert heatmap[0, 0, 5, 10] == pytest.approx(heatmap[0, 0, 10, 16])  # every side alike


def test_weighted_mse_on_a_hand_computed_example():
    target = torch.tensor([0.0, 0.5, 1.0, 0.0])
    prediction = torch.tensor([0.1, 0.5, 0.5, 0.0])
    # foreground: (0 + 0.25) / (0.5 + 1.0); background: (0.01 + 0) / 2 voxels; mean of the two
    assert float(weighted_mse(prediction, target)) == pytest.approx((0.25 / 1.5 + 0.01 / 2) / 2)
    assert float(weighted_mse(torch.full((4,), 0.2), torch.zeros(4))) == pytest.approx(0.04 / 2)


# ------------------------------------------------------------------------------ localization box ([Zhang 2019])
def test_roi_uses_the_landmark_box_when_the_transverse_widths_disagree():
    segmentation = [[2, 10], [5, 20], [10, 40]]           # width 30
    assert choose_box(segmentation, [[2, 10], [5, 20], [8, 42]]) == (segmentation, "segmentation")  # 34: within 20 %
    one_kidney = [[2, 10], [5, 20], [10, 25]]            # width 15 against 32
    assert choose_box(one_kidney, [[2, 10], [5, 20], [9, 41]]) == ([[2, 10], [5, 20], [9, 41]], "landmarks")
    assert choose_box(None, None) == (None, "none")
    heatmaps = np.zeros((5, 4, 8, 8))
    heatmaps[0, 1, 2, 3] = heatmaps[2, 2, 5, 6] = 0.9
    assert landmark_box(heatmaps) == [[1, 3], [2, 6], [3, 7]]
    # coarse 10 x 20 x 20 -> fine 40 x 80 x 80 (x4), margin 6 mm at 2 mm = 3 voxels, clipped to the grid
    assert scale_box([[1, 3], [2, 6], [3, 20]], (10, 20, 20), (40, 80, 80), (2.0, 2.0, 2.0), (6, 6, 6)) == \
        [[1, 15], [5, 27], [9, 80]]


# ------------------------------------------------------------------------------ kidney count ([KiTS19 coarse-to-fine])
def _kidneys(count: int, spacing, volume_ml: float = 60.0) -> np.ndarray:
    """``count`` separate cuboid kidneys of about ``volume_ml`` each, plus a 2 ml speck of noise."""
    mask = np.zeros((60, 200, 300), bool)
    side = [round((volume_ml * 1000 / np.prod(spacing)) ** (1 / 3) * np.cbrt(spacing[0] / s)) for s in spacing]
    side[0] = round(volume_ml * 1000 / np.prod(spacing) / (side[1] * side[2]))
    for k in range(count):
        mask[2:2 + side[0], 10:10 + side[1], 10 + k * 95:10 + k * 95 + side[2]] = True
    speck = round(2000 / np.prod(spacing))
    mask[-3, -3, -speck - 2:-2] = True
    return mask


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("spacing", [(3.0, 0.7816, 0.7816), (1.5, 1.2, 1.2)])
def test_kidney_count_rule(count, spacing):
    check = kidney_check(_kidneys(count, spacing), spacing)
    assert check["kidney_count"] == count
    assert check["abnormal"] is (count != 2)
    assert all(v == pytest.approx(60.0, rel=0.1) for v in check["kidney_volumes_ml"])
    assert MIN_KIDNEY_VOLUME_ML == pytest.approx(18.33, abs=0.01)


# ------------------------------------------------------------------------------ derived grids
def test_grid_crops_of_a_two_kidney_case():
    spacing = (3.0, 1.0, 1.0)
    seg = np.zeros((40, 300, 300), np.int8)
    seg[10:30, 100:180, 40:100] = 1               # right kidney, 20 x 80 x 60 voxels = 288 ml
    seg[12:28, 110:170, 200:250] = 1              # left kidney
    seg[15:20, 120:130, 90:100] = 2               # tumor on the right kidney
    labels = {"kidney_and_tumor": [1, 2], "kidney": [1], "tumor": [2]}
    assert crop_boxes(seg, spacing, "roi", labels) == [[[2, 38], [50, 230], [0, 300]]]  # 24 / 50 / 50 mm margins
    assert crop_boxes(seg, spacing, "tumor", labels) == [[[11, 24], [114, 136], [84, 106]]]  # 12 / 6 / 6 mm
    assert crop_boxes(seg, spacing, "kidney_frame", labels) == [[[2, 38], [76, 204], [16, 274]]]
    # sagittal: 192 mm x 200 mm around the centroid (z, y), every x; z is the whole 120 mm image
    (z, y, x), = crop_boxes(seg, spacing, "sagittal", labels)
    assert z == [0, 40] and y[1] - y[0] == 200 and x == [0, 300]
    right, left = crop_boxes(seg, spacing, "kidney", labels)  # largest kidney first
    assert right[0] == [5, 35] and right[1][1] - right[1][0] == 125 and right[2][1] - right[2][0] == 125
    assert left[2][0] <= 200 and left[2][1] >= 250
    assert len(kidney_components(seg > 0, spacing)) == 2
    assert crop_boxes(np.zeros((4, 5, 6), np.int8), spacing, "kidney", labels) == [[[0, 4], [0, 5], [0, 6]]]


def test_class_balanced_sampler_centres_a_third_on_each_class(tmp_path):
    data = np.zeros((1, 20, 20, 20), np.float32)
    seg = np.zeros((1, 20, 20, 20), np.int8)
    seg[0, 2, 2, 2], seg[0, 17, 17, 17] = 1, 2
    properties = {"class_locations": class_locations(seg[0], [1, 2])}
    save_case(tmp_path, "a", data, seg, properties, [4, 4, 4])
    sampler = ClassBalancedSampler(PreprocessedCases(tmp_path, ["a"]), 3000, [4, 4, 4], centre_classes=[1, 2],
                                   seed=3)
    centres = sampler.generate_train_batch()["seg"][:, 0]
    on_kidney, on_tumor = (centres == 1).any(axis=(1, 2, 3)).mean(), (centres == 2).any(axis=(1, 2, 3)).mean()
    # random patches (4^3 of 20^3) rarely hold either voxel
    assert on_kidney == pytest.approx(1 / 3, abs=0.03) and on_tumor == pytest.approx(1 / 3, abs=0.03)


# ------------------------------------------------------------------------------ component rules
def test_small_slice_components_and_lesions_connected_to_the_kidney():
    mask = np.zeros((2, 30, 30), bool)
    mask[0, 0:8, 0:8] = True                     # 64 pixels: removed
    mask[0, 10:18, 10:18] = True
    mask[0, 18, 10] = True                       # 65 pixels: kept
    mask[1, 0:10, 0:10] = True                   # 100 pixels: kept
    kept = remove_small_slice_components(mask, (0.78, 0.78))  # [Zhang 2019]: more than 64 pixels at 0.78 mm
    assert kept.sum() == 65 + 100 and not kept[0, :8, :8].any()
    assert remove_small_slice_components(mask, (1.0, 1.0), min_area_mm2=64.0).sum() == 65 + 100
    assert remove_small_slice_components(mask, (2 * 0.78, 0.78)).sum() == 64 + 65 + 100  # more than 32 pixels
    region = np.zeros((5, 10, 10), bool)
    region[:, 2:5, 2:5] = True
    lesions = np.zeros_like(region)
    lesions[2, 5:8, 3] = True                    # touches the region
    lesions[2, 8:10, 8:10] = True                # does not
    lesions[1, 3, 3] = True                      # inside it
    kept = keep_connected_to(lesions, region)
    assert kept.sum() == 3 + 1 and not kept[2, 8:, 8:].any()


# ------------------------------------------------------------------------------ 2-step attention head ([Pan 2019])
def _architecture() -> ArchitecturePlan:
    return ArchitecturePlan(features_per_stage=[8, 16, 16], conv_dim=3, kernel_sizes=[[3, 3, 3]] * 3,
                            strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1],
                            n_conv_per_stage_decoder=[1, 1])


def test_two_step_head_shapes_and_equation_1():
    torch.manual_seed(0)
    network = TwoStepUNet(_architecture(), 1, 3).eval()
    x = torch.randn(2, 1, 8, 12, 12)
    with torch.no_grad():
        outputs, binary = network(x)
        assert [tuple(o.shape) for o in outputs] == [(2, 3, 8, 12, 12), (2, 3, 4, 6, 6)]
        features = network.decode(network.encode(x))[0]
        p = torch.softmax(network.two_step.binary(features), 1)[:, 1:]
        block = network.two_step.features(features)
        assert torch.allclose(outputs[0], network.two_step.classifier(p * block + block), atol=1e-5)
        network.set_deep_supervision(False)
        assert torch.equal(network(x), outputs[0])
    assert binary.shape == (2, 2, 8, 12, 12) and outputs[0].shape == (2, 3, 8, 12, 12)
    assert network.two_step.features[0].out_channels == 32


def test_two_step_loss_is_the_ternary_loss_plus_binary_cross_entropy():
    torch.manual_seed(1)
    ternary = [torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    binary = torch.randn(2, 2, 4, 4, 4)
    targets = [torch.randint(0, 3, (2, 1, 4, 4, 4)), torch.randint(0, 3, (2, 1, 2, 2, 2))]
    segmentation = DeepSupervisionLoss(DiceCELoss(batch_dice=False), [2 / 3, 1 / 3])
    loss = AuxiliaryHeadLoss(segmentation, binary_cross_entropy_of_foreground)((ternary, binary), targets)
    expected = segmentation(ternary, targets) + cross_entropy(binary, (targets[0] > 0).long())
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # a hand example of the binary term: logits (0, ln 3) give p(foreground) = 3/4
    logits = torch.tensor([0.0, np.log(3.0)]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 1, 2)
    target = torch.tensor([0, 2]).view(1, 1, 1, 1, 2)
    assert float(cross_entropy(logits, (target > 0).long())) == pytest.approx((-np.log(0.25) - np.log(0.75)) / 2)


def _train_and_predict(roots, output, trainer: str, epochs: int = 2, num_gpus: int = 1):
    """Train fold 0 of the tiny dataset with ``trainer`` (``num_gpus`` > 1: that many gloo processes on the CPU),
    predict its images; the fold folder and the report."""
    options = TrainingOptions(epochs=epochs, iterations_per_epoch=3, validation_iterations=1, augmentation_workers=0,
                              progress_bar=False)
    folder = run_training(TrainingRequest("1", "3d_fullres", "0", trainer=get_trainer(trainer), device="cpu",
                                          num_gpus=num_gpus, options=options))
    assert folder.parent.name == f"{trainer}__boxunetPlans__3d_fullres"
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"0", "1", "2"}
    source = roots["raw"] / "Dataset001_Tiny"
    predict_main(["-i", str(source / "imagesTr"), "-o", str(output), "-d", "1", "-c", "3d_fullres",
                  "-tr", trainer, "-f", "0", "--quiet", "-np", "0", "--disable-tta"])  # TTA: test_sliding_window
    for case in range(6):
        labels, geometry = read_image(output / f"case_{case:03d}.nii.gz")
        _, reference = read_image(source / "labelsTr" / f"case_{case:03d}.nii.gz")
        assert labels.shape == (16, 48, 40) and geometry.spacing == pytest.approx(reference.spacing)
        assert set(np.unique(labels)) <= {0, 1, 2}
    return folder, json.loads((output / "prediction_report.json").read_text())


@pytest.mark.slow
def test_two_step_attention_learns_votes_reports_and_evaluates_the_case_classes(roots, tmp_path, capsys):
    folder = write_tiny_dataset(roots["raw"], num_cases=6, with_boxes=False, shape=(16, 48, 40))
    description = json.loads((folder / "dataset.json").read_text())
    truth = {f"case_{i:03d}": ("malignant" if i % 2 else "benign") for i in range(6)}
    description["case_classification"] = {"name": "malignancy", "classes": ["benign", "malignant"], "cases": truth}
    (folder / "dataset.json").write_text(json.dumps(description))
    plan_tiny_3d_fullres()
    model, report = _train_and_predict(roots, tmp_path / "out", "TwoStepAttention")
    assert "pseudo Dice [kidney" in (model / "training_log.txt").read_text()
    validation = json.loads((model / "validation" / "summary.json").read_text())["case_classification"]
    assert validation["name"] == "malignancy" and validation["cases"] == 2
    assert sum(map(sum, (row.values() for row in validation["confusion"].values()))) == 2
    for case, details in report["details"].items():
        assert details["case_class"] in ("benign", "malignant", None)
        assert sum(details["class_votes"].values()) > 0 or details["case_class"] is None
    evaluate_main([str(roots["raw"] / "Dataset001_Tiny" / "labelsTr"), str(tmp_path / "out"), "-d", "1",
                   "--no-surface", "-np", "1"])
    assert "malignancy: accuracy" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["case_classification"]
    predicted = {case: d["case_class"] for case, d in report["details"].items()}
    assert summary["accuracy"] == pytest.approx(np.mean([predicted[c] == truth[c] for c in truth]))


def test_case_class_summary_votes_and_patch_targets():
    truth = {"a": "x", "b": "x", "c": "y", "d": "y"}
    predicted = {"a": "x", "b": "y", "c": "y", "d": None}
    summary = classification_summary(truth, predicted, ["x", "y"], ["a", "b", "c", "d", "e"])
    assert summary["cases"] == 4 and summary["accuracy"] == 0.5
    assert summary["recall"] == {"x": 0.5, "y": 0.5} and summary["confusion"]["y"] == {"x": 0, "y": 1, "none": 1}
    assert majority_class(np.array([[2, 2, 1], [0.9, 1.3, 0.8]]), ["a", "b", "c"]) == "b"  # tie: the higher sum
    assert majority_class(np.zeros((2, 3)), ["a", "b", "c"]) is None
    with pytest.raises(BoxunetError, match="classes not in"):
        parse_dataset_json({"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumor": 1}, "numTraining": 1,
                            "file_ending": ".nii.gz", "case_classification": {"classes": ["a", "b"],
                                                                              "cases": {"c1": "z"}}})


@pytest.mark.slow
def test_localization_ensemble_trains_every_stage_and_predicts_the_pipeline(dense_tiny, tmp_path):
    folder, report = _train_and_predict(dense_tiny, tmp_path / "out", "KiTSLocalizationEnsemble", epochs=1)
    stages = json.loads((folder / "stage_configurations.json").read_text())
    assert list(stages) == ["localization", "kidney_and_tumor", "kidney", "tumor"]
    # the coarse grid is the 3d_fullres grid downsampled x4; the roi grid crops it
    dataset = dense_tiny["preprocessed"] / "Dataset001_Tiny"
    for case in (p.name for p in (dataset / "boxunetPlans_3d_fullres").glob("*.json")):
        fullres = json.loads((dataset / "boxunetPlans_3d_fullres" / case).read_text())
        coarse = json.loads((dataset / "boxunetPlans_3d_fullres_kits_coarse" / case).read_text())
        assert coarse["shape_after_resampling"] == [round(s / 4) for s in fullres["shape_after_resampling"]]
        assert coarse["spacing"] == pytest.approx([s * n / c for s, n, c in zip(
            fullres["spacing"], fullres["shape_after_resampling"], coarse["shape_after_resampling"])])
        roi = json.loads((dataset / "boxunetPlans_3d_fullres_kits_roi" / case).read_text())
        assert [hi - lo for lo, hi in roi["kits_crop"]] == roi["shape_after_resampling"]
    for stage in KiTSLocalizationEnsemble.stages:
        assert (folder / stage.name / "checkpoint_final.pth").is_file(), stage
        assert f"pseudo Dice [{stage.foreground} " in (folder / stage.name / "training_log.txt").read_text()
    assert set(report["details"]) == {f"case_{i:03d}" for i in range(6)}
    for details in report["details"].values():
        assert details["roi_source"] in ("segmentation", "landmarks", "none") and len(details["roi"]) == 3
    # a second run with the same options reuses every stage
    stamps = {stage: (folder / stage / "checkpoint_final.pth").stat().st_mtime_ns for stage in stages}
    options = TrainingOptions(epochs=1, iterations_per_epoch=3, validation_iterations=1, augmentation_workers=0,
                              progress_bar=False)
    run_training(TrainingRequest("1", "3d_fullres", "0", trainer=KiTSLocalizationEnsemble, device="cpu",
                                 options=options))
    assert stamps == {stage: (folder / stage / "checkpoint_final.pth").stat().st_mtime_ns for stage in stages}


def test_localization_ensemble_reads_kits19_and_kits23_labels():
    assert kits_label_values({"background": 0, "kidney": 1, "tumor": 2}) == \
        {"kidney_and_tumor": [1, 2], "kidney": [1], "tumor": [2]}
    assert kits_label_values({"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}) == \
        {"kidney_and_tumor": [1, 2, 3], "kidney": [1], "tumor": [2]}
    with pytest.raises(BoxunetError, match="need KiTS labels"):
        kits_label_values({"background": 0, "liver": 1, "tumor": 2})


# ------------------------------------------------------------------------------ pipelines with stand-in networks
class _Pointwise(nn.Module):
    """A stand-in stage network: foreground logit ``rule(x)`` per voxel (x: the input), plus ``heatmaps``
    channels ``heatmap_rule(x)`` (0 without a rule); the sliding window then returns exactly these values."""

    def __init__(self, rule, heatmaps: int = 0, heatmap_rule=None):
        super().__init__()
        self.rule, self.heatmaps, self.heatmap_rule = rule, heatmaps, heatmap_rule

    def set_deep_supervision(self, enabled: bool) -> None:
        pass

    def forward(self, x):
        foreground = self.rule(x)
        outputs = [torch.zeros_like(foreground), foreground]
        if self.heatmaps:
            heatmap = self.heatmap_rule(x) if self.heatmap_rule else torch.zeros_like(foreground)
            outputs += [heatmap] * self.heatmaps
        return torch.cat(outputs, 1)


def _stand_in_pipeline(pipeline, rules: dict) -> list:
    """One fold of ``pipeline`` whose stage networks are ``_Pointwise`` stand-ins (``rules``: stage name ->
    (rule, heatmap rule or None))."""
    from types import SimpleNamespace

    from boxunet.io.labels import Labels
    from boxunet.kits.stages import StageNetworks
    from boxunet.planning.plans import ConfigurationPlan
    labels = {"background": 0, "kidney": 1, "tumor": 2}
    plans = SimpleNamespace(labels=labels, label_set=Labels.from_mapping(labels), num_input_channels=1)
    configurations = {}
    for stage in pipeline.stages:
        dim = stage.conv_dim
        architecture = ArchitecturePlan(features_per_stage=[2, 2], conv_dim=dim, kernel_sizes=[[3] * dim] * 2,
                                        strides=[[1] * dim, [2] * dim], n_conv_per_stage=[1, 1],
                                        n_conv_per_stage_decoder=[1])
        configurations[stage.name] = ConfigurationPlan(stage.name, "x", [1.0] * dim, [8, 32, 32][-dim:], 2,
                                                       [8.0] * dim, architecture, False)
    networks = StageNetworks(plans, pipeline.stages, configurations)
    for stage in pipeline.stages:
        rule, heatmap_rule = rules[stage.name]
        networks.stages[stage.name] = _Pointwise(rule, stage.regression_channels, heatmap_rule)
    return [networks]


def _above(threshold):
    return lambda x: 20.0 * (x[:, :1] - threshold)


def _kidneys_and_tumor(shape=(40, 160, 160), kidneys=2, tumor=(slice(18, 22), slice(60, 70), slice(30, 40))):
    """Intensity 1.5 in cuboid kidneys of 20 x 60 x 40 voxels (92 ml at 3 x 0.8 x 0.8 mm), 3 in a tumor."""
    data = np.zeros((1, *shape), np.float32)
    for k in range(kidneys):
        data[0, 10:30, 40:100, 20 + 80 * k:60 + 80 * k] = 1.5
    data[(0, *tumor)] = 3.0
    return torch.from_numpy(data)


RUN = PredictionRun(mirroring=False, step_size=0.5, device=torch.device("cpu"), precision="fp32")
SPACING = [3.0, 0.8, 0.8]


def test_coarse_to_fine_normal_abnormal_and_2d_fallback_paths():
    kidney, tumor = _above(1.0), _above(2.0)
    rules = {"coarse": (kidney, None), "correction": (kidney, None), "fine": (kidney, None), "tumor": (tumor, None),
             # the 2D network sees the image and the kidney mask: tumor only inside the mask
             "tumor_2d": (lambda x: torch.minimum(20.0 * (x[:, :1] - 2.0), 20.0 * (x[:, 1:2] - 0.5)), None)}
    networks = _stand_in_pipeline(KiTSCoarseToFine, rules)
    data = _kidneys_and_tumor()
    labels, details = KiTSCoarseToFine.predict_case(networks, data, SPACING, RUN)
    expected = np.where(data[0].numpy() > 2, 2, np.where(data[0].numpy() > 1, 1, 0))
    assert np.array_equal(labels, expected)
    assert details["coarse_kidney_count"] == 2 and details["abnormal"] is False and details["kidney_count"] == 2
    # measured on the coarse grid, where linear downsampling trims the cuboids' faces (92.2 ml each)
    assert details["tumor_network"] == "3d" and all(60 < v < 92.2 for v in details["coarse_kidney_volumes_ml"])
    one_kidney = _kidneys_and_tumor(kidneys=1)
    labels, details = KiTSCoarseToFine.predict_case(networks, one_kidney, SPACING, RUN)
    assert details["abnormal"] is True and details["kidney_count"] == 1  # the correction model ran
    assert np.array_equal(labels > 0, one_kidney[0].numpy() > 1)
    small = _kidneys_and_tumor(tumor=(slice(18, 20), slice(60, 65), slice(30, 35)))  # 0.1 ml < 0.5 ml
    labels, details = KiTSCoarseToFine.predict_case(networks, small, SPACING, RUN)
    assert details["tumor_network"] == "2d" and (labels == 2).sum() == 2 * 5 * 5


def test_localization_ensemble_falls_back_to_the_landmark_box():
    data = _kidneys_and_tumor()
    data[0, :, :, 100:] *= 0.8  # the left kidney is dimmer (1.2): the localization segmentation misses it
    rules = {"localization": (_above(1.4), lambda x: 20.0 * (x[:, :1] - 1.1)),  # landmarks see both kidneys
             "kidney_and_tumor": (_above(1.1), None),
             "kidney": (lambda x: torch.minimum(20.0 * (x[:, :1] - 1.1), 20.0 * (2.5 - x[:, :1])), None),
             "tumor": (_above(2.5), None)}
    labels, details = KiTSLocalizationEnsemble.predict_case(_stand_in_pipeline(KiTSLocalizationEnsemble, rules),
                                                            data, SPACING, RUN)
    assert details["roi_source"] == "landmarks"
    expected = np.where(data[0].numpy() > 2.5, 2, np.where(data[0].numpy() > 1.1, 1, 0))
    assert np.array_equal(labels, expected)
    assert details["roi"][2] == [0, 160]  # both kidneys (x 20..140) plus 50 mm, clipped


@pytest.mark.slow
def test_coarse_to_fine_trains_every_stage_on_two_gloo_processes_and_reports_the_kidney_check(dense_tiny, tmp_path):
    folder, report = _train_and_predict(dense_tiny, tmp_path / "out", "KiTSCoarseToFine", epochs=1, num_gpus=2)
    assert all((folder / stage.name / "checkpoint_final.pth").is_file() for stage in KiTSCoarseToFine.stages)
    assert json.loads((folder / "debug.json").read_text())["world_size"] == 2
    # each rank validated one of the two held-out cases; their details were gathered into one report
    details = json.loads((folder / "validation" / "prediction_report.json").read_text())["details"]
    splits = json.loads((dense_tiny["preprocessed"] / "Dataset001_Tiny" / "splits_final.json").read_text())
    assert sorted(details) == sorted(splits[0]["val"])
    stages = json.loads((folder / "stage_configurations.json").read_text())
    assert list(stages) == ["coarse", "correction", "fine", "tumor", "tumor_2d"]
    assert len(stages["tumor_2d"]["patch_size"]) == 2 and len(stages["fine"]["patch_size"]) == 3
    index = json.loads((dense_tiny["preprocessed"] / "Dataset001_Tiny" / "boxunetPlans_3d_fullres_kits_kidney" /
                        "derived_cases.json").read_text())
    assert index["case_000"] == ["case_000_k0"]  # one kidney per tiny case
    assert set(report["details"]) == {f"case_{i:03d}" for i in range(6)}
    for details in report["details"].values():
        # the kidney check of the coarse network's answer (a barely trained network: any count) is reported
        volumes = details["coarse_kidney_volumes_ml"]
        assert details["coarse_kidney_count"] == len(volumes) and all(v >= MIN_KIDNEY_VOLUME_ML for v in volumes)
        assert details["abnormal"] is (len(volumes) != 2)
        assert details["tumor_network"] in ("3d", "2d", None)
