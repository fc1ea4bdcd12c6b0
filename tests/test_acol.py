"""[Fan 2022]'s region mining pieces on hand-made data: anchors, negative sampling, box features, ACoL erasing."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from boxunet.api import pseudo_masks
from boxunet.boxes.anchors import box_level, level_anchors, nearest_negatives, overlaps_any, sample_negatives
from boxunet.boxes.region_mining import (RegionMiningParameters, _flat, box_maps, normalize_channels,
                                         train_region_miner, training_slices)
from boxunet.cli.pseudo_labels import main as pseudo_labels_main
from boxunet.cli.pseudo_labels import parse_mining_parameters
from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box, write_boxes
from boxunet.io.images import Geometry, read_image, write_image
from boxunet.nets.acol import ACoLHead, RegionMiner, erase_salient, normalized_map, roi_features


def test_anchors_of_a_level_have_three_shapes_per_cell_and_the_level_area():
    anchors = level_anchors((256, 256), 2)  # stride 4: 64 x 64 cells, area 32^2
    assert 0.95 * 64 * 64 * 3 < len(anchors) < 64 * 64 * 3  # only some corner anchors are less than half inside
    centre = anchors[(np.abs((anchors[:, 0] + anchors[:, 2]) / 2 - 130) < 1e-9)
                     & (np.abs((anchors[:, 1] + anchors[:, 3]) / 2 - 130) < 1e-9)]
    sizes = sorted((round(b[2] - b[0], 3), round(b[3] - b[1], 3)) for b in centre)
    assert sizes == sorted([(32.0, 32.0), (round(32 / np.sqrt(2), 3), round(32 * np.sqrt(2), 3)),
                            (round(32 * np.sqrt(2), 3), round(32 / np.sqrt(2), 3))])
    assert anchors.min() >= 0 and anchors[:, 2].max() <= 256 and anchors[:, 3].max() <= 256
    # a P5 anchor (256 x 256) on a 128 x 128 slice is never half inside: none is kept
    assert len(level_anchors((128, 128), 5)) == 0


def test_negatives_overlap_no_box_and_the_nearest_come_first():
    boxes = np.array([[40.0, 40.0, 60.0, 70.0]])
    anchors = level_anchors((128, 128), 2)
    negatives = anchors[~overlaps_any(anchors, boxes)]
    assert 0 < len(negatives) < len(anchors)
    assert not overlaps_any(negatives, boxes).any()
    assert overlaps_any(np.array([[59.0, 69.0, 80.0, 80.0], [60.0, 0.0, 80.0, 80.0]]), boxes).tolist() == [True, False]
    nearest = nearest_negatives((128, 128), boxes, 2)
    assert len(nearest) == int(np.ceil(0.1 * len(negatives)))
    distance = np.hypot((nearest[:, 0] + nearest[:, 2]) / 2 - 50, (nearest[:, 1] + nearest[:, 3]) / 2 - 55)
    everyone = np.hypot((negatives[:, 0] + negatives[:, 2]) / 2 - 50, (negatives[:, 1] + negatives[:, 3]) / 2 - 55)
    assert np.all(np.diff(distance) >= -1e-9) and distance.max() <= np.sort(everyone)[len(nearest) - 1] + 1e-9
    samples = sample_negatives((128, 128), boxes, np.random.default_rng(0), count=20)
    assert len(samples) == 20 and {level for level, _ in samples} <= {2, 3, 4, 5}
    pool = sum(len(nearest_negatives((128, 128), boxes, level)) for level in (2, 3, 4, 5))
    assert len(sample_negatives((128, 128), boxes, np.random.default_rng(0), count=10 ** 6)) == pool


def test_box_level_follows_the_fpn_rule():
    assert [box_level([0, 0, s, s]) for s in (16, 111, 112, 224, 448, 1000)] == [2, 2, 3, 4, 5, 5]


def test_box_features_sample_the_feature_map_at_the_box_grid():
    height, width, stride = 8, 12, 4
    ramp_x = ((torch.arange(width) + 0.5) * stride).float().expand(height, width)
    ramp_y = ((torch.arange(height) + 0.5) * stride).float()[:, None].expand(height, width)
    feature_map = torch.stack([ramp_y, ramp_x])[None]  # each cell holds its centre's pixel (y, x)
    sampled = roi_features(feature_map, torch.tensor([[8.0, 8.0, 24.0, 40.0], [0.0, 4.0, 8.0, 12.0]]), stride,
                           size=4)
    assert sampled.shape == (2, 2, 4, 4)
    assert torch.allclose(sampled[0, 0, :, 0], torch.tensor([10.0, 14.0, 18.0, 22.0]))
    assert torch.allclose(sampled[0, 1, 0], torch.tensor([12.0, 20.0, 28.0, 36.0]))
    assert torch.allclose(sampled[1, 1, 0], torch.tensor([5.0, 7.0, 9.0, 11.0]))  # the second box, same call


def test_erasing_and_the_fused_map():
    class_map = torch.tensor([[[-1.0, 0.0], [2.0, 4.0]]])
    normalized = normalized_map(class_map)
    assert torch.allclose(normalized, torch.tensor([[[0.0, 0.0], [0.5, 1.0]]]))
    assert torch.equal(normalized_map(torch.full((1, 2, 2), 3.0)), torch.zeros(1, 2, 2))
    features = torch.ones(1, 3, 2, 2)
    erased = erase_salient(features, normalized, threshold=0.6)
    assert erased[0, :, 1, 1].sum() == 0 and erased[0, :, 1, 0].sum() == 3 and erased[0, :, 0].sum() == 6
    torch.manual_seed(0)
    outputs = ACoLHead(8, hidden=16)(torch.randn(5, 8, 7, 7))
    fused = outputs["fused"]
    assert fused.shape == (5, 7, 7) and fused.min() >= 0 and fused.max() <= 1
    assert torch.equal(fused, torch.maximum(outputs["map_a"], outputs["map_b"]))
    assert outputs["logits_a"].shape == outputs["logits_b"].shape == (5, 2)


def test_region_miner_reads_each_box_from_its_level():
    torch.manual_seed(0)
    miner = RegionMiner(2, pyramid_channels=8)
    outputs = miner(torch.randn(2, 2, 64, 64), torch.tensor([0, 1]), torch.tensor([2, 5]),
                    torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 64.0, 64.0]]))
    assert outputs["fused"].shape == (2, 14, 14)
    loss = sum(torch.nn.functional.cross_entropy(outputs[k], torch.tensor([1, 0])) for k in ("logits_a", "logits_b"))
    loss.backward()
    assert miner.head.branch_b[0].weight.grad is not None and miner.backbone.stem[0].weight.grad is not None


def _disk_case(seed: int, shape=(6, 64, 64)):
    """A noisy image with a bright disk (radius 7) and its box, on slices 1..4."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.3, (1, *shape)).astype(np.float32)
    centre = rng.integers(16, 48, size=2)
    y, x = np.mgrid[:shape[1], :shape[2]]
    disk = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= 49
    image[0, 1:5][:, disk] += 2.0
    mask = np.zeros(shape, bool)
    mask[1:5][:, disk] = True
    box = Box(1, (1, int(centre[0]) - 7, int(centre[1]) - 7), (5, int(centre[0]) + 8, int(centre[1]) + 8))
    return image, box, mask


def test_region_miner_learns_to_tell_boxes_from_anchors_and_maps_each_box():
    cases = [_disk_case(seed) for seed in range(6)]
    samples = [s for image, box, _ in cases for s in training_slices(normalize_channels(image), [box], 1)]
    assert len(samples) == 6 * 4 and samples[0][1].tolist() == [[cases[0][1].min[1], cases[0][1].min[2],
                                                                  cases[0][1].max[1], cases[0][1].max[2]]]
    parameters = RegionMiningParameters(epochs=8, learning_rate=1e-2, negatives=16, pyramid_channels=16,
                                        hidden_channels=32, roi_size=7, patience=0)
    miner, losses = train_region_miner(samples, 1, parameters)
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]
    image, box, mask = cases[0]
    maps = box_maps(miner, normalize_channels(image), box)
    assert maps["fused"].shape == maps["cam"].shape == box.size
    assert maps["fused"].min() >= 0 and maps["fused"].max() <= 1 and np.all(maps["fused"] >= maps["cam"] - 1e-6)
    inside = mask[box.slices]  # the disk lights up its box's maps more than the box corners do
    assert maps["cam"][inside].mean() > maps["cam"][~inside].mean() + 0.2
    assert maps["fused"][inside].mean() > maps["fused"][~inside].mean()


def _disk_dataset(raw_root, cases: int = 6, thin: bool = False, unboxed_label: bool = False):
    """A box dataset of noisy 6 x 64 x 64 images with a bright disk (label 1, known only by its box); ``thin``: the
    disk and its box on one slice; ``unboxed_label``: a second box label that no case has a box of."""
    folder = raw_root / "Dataset001_Disks"
    for sub in ("imagesTr", "labelsTr", "boxesTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in range(cases):
        image, box, mask = _disk_case(seed)
        if thin:
            for z in (1, 3, 4):
                image[0, z][mask[z]] -= 2.0
                mask[z] = False
            box = Box(1, (2, *box.min[1:]), (3, *box.max[1:]))
        geometry = Geometry((3.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), mask.shape)
        write_image(image[0], geometry, folder / "imagesTr" / f"d_{seed}_0000.nii.gz")
        write_image(mask.astype(np.uint8), geometry, folder / "labelsTr" / f"d_{seed}.nii.gz")
        write_boxes([box], folder / "boxesTr" / f"d_{seed}.json")
    labels = {"background": 0, "lesion": 1} | ({"cyst": 2} if unboxed_label else {})
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": labels, "numTraining": cases,
        "file_ending": ".nii.gz", "box_labels": [1, 2] if unboxed_label else [1]}))
    return folder


def test_pseudo_labels_acol_end_to_end_beats_the_boxes_and_reuses_its_miner(roots):
    _disk_dataset(roots["raw"])
    mining = json.dumps({"epochs": 8, "learning_rate": 1e-2, "negatives": 16, "pyramid_channels": 16,
                         "hidden_channels": 32, "roi_size": 7, "patience": 0})
    pseudo_labels_main(["-d", "1", "--quiet", "--method", "acol", "--mining-parameters", mining])
    folder = roots["preprocessed"] / "Dataset001_Disks" / "pseudo_labels" / "stage1"
    report = json.loads((folder / "report.json").read_text())
    mean = report["mean"]["1"]
    assert report["method"] == "acol" and report["mining"]["epochs"] == 8
    assert report["region_miners"]["1"]["trained_now"] and len(report["region_miners"]["1"]["losses"]) == 8
    # ACoL's own maps, its masks and, beside them, the default ConvCRF method's masks of the same cases
    assert {"dice_boxes", "dice_cam", "dice_acol", "dice_convcrf", "dice_pseudo_mask"} <= set(mean)
    assert mean["dice_pseudo_mask"] > mean["dice_boxes"] + 0.05  # a disk fills pi/4 of its box: boxes 0.79
    assert (folder / "d_0.nii.gz").is_file() and (folder / "region_miner_label1.pth").is_file()
    stamp = (folder / "region_miner_label1.pth").stat().st_mtime_ns
    pseudo_labels_main(["-d", "1", "--quiet", "--method", "acol", "--mining-parameters", mining, "--overwrite"])
    assert (folder / "region_miner_label1.pth").stat().st_mtime_ns == stamp  # same cases and parameters
    reused = json.loads((folder / "report.json").read_text())["region_miners"]["1"]
    assert not reused["trained_now"] and reused["losses"] == report["region_miners"]["1"]["losses"]
    # a changed image retrains the miner, and every case's masks follow it (no --overwrite needed)
    case_stamp = (folder / "d_1.nii.gz").stat().st_mtime_ns
    image = roots["raw"] / "Dataset001_Disks" / "imagesTr" / "d_0_0000.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10 ** 9))
    pseudo_labels_main(["-d", "1", "--quiet", "--method", "acol", "--mining-parameters", mining])
    assert json.loads((folder / "report.json").read_text())["region_miners"]["1"]["trained_now"]
    assert (folder / "d_1.nii.gz").stat().st_mtime_ns != case_stamp
    for method, bad in (("acol", '{"epoch": 3}'), ("acol", '{"batch_size": 0}'), ("convcrf", '{"epochs": 3}')):
        with pytest.raises(SystemExit, match="--mining-parameters"):
            pseudo_labels_main(["-d", "1", "--quiet", "--method", method, "--mining-parameters", bad])


def test_mining_presets_and_bad_parameters():
    default = parse_mining_parameters("{}")
    assert (default.epochs, default.negatives, default.hidden_channels, default.max_slices_per_box,
            default.patience) == (12, 32, 128, 8, 3)
    seed = parse_mining_parameters('{"preset": "fan2022"}')  # [Fan 2022]'s settings, for GPUs
    assert (seed.epochs, seed.negatives, seed.hidden_channels, seed.max_slices_per_box, seed.patience) == (
        50, 256, 512, 16, 0)
    assert parse_mining_parameters('{"preset": "fan2022", "epochs": 3}').epochs == 3
    for text, message in (('{"preset": "gpu"}', "preset 'gpu': choose one of cpu, fan2022"),
                          ('{"epochs": 2.5}', "wrong type: epochs=2.5"), ('{"epochs": "2"}', "wrong type: epochs='2'"),
                          ('{"negatives": -1}', "out of range: negatives=-1"),
                          ('{"min_improvement": 1}', "out of range: min_improvement=1"),
                          ('{"seed": -1}', "out of range: seed=-1"), ('{"precision": "fp8"}', "precision='fp8'"),
                          ('{"epoch": 3}', "unexpected keyword argument 'epoch'"), ('[3]', "must be a JSON object")):
        with pytest.raises(BoxunetError, match=message):
            parse_mining_parameters(text)


def test_training_stops_when_the_loss_has_flattened():
    assert _flat([1.0, 0.5, 0.49, 0.495], patience=2, min_improvement=0.05)  # best before 0.5, then >= 0.475
    assert not _flat([1.0, 0.5, 0.4, 0.45], patience=2, min_improvement=0.05)
    assert not _flat([1.0, 1.0, 1.0], patience=0, min_improvement=0.05) and not _flat([1.0, 1.0], 2, 0.05)
    samples = [s for seed in range(2) for s in training_slices(normalize_channels(_disk_case(seed)[0]),
                                                               [_disk_case(seed)[1]], 1)]
    parameters = RegionMiningParameters(epochs=30, negatives=8, pyramid_channels=8, hidden_channels=8, roi_size=5,
                                        patience=1, min_improvement=0.99)
    assert len(train_region_miner(samples, 1, parameters)[1]) == 2  # no epoch can fall by 99 %
    for precision in ("fp32", "fp16"):  # fp16 trains with a gradient scaler, as on CUDA
        losses = train_region_miner(samples, 1, replace(parameters, patience=0, epochs=2, precision=precision))[1]
        assert len(losses) == 2 and np.isfinite(losses).all()


def test_acol_on_one_slice_boxes_and_an_unboxed_label_with_progress(roots, capsys):
    _disk_dataset(roots["raw"], cases=4, thin=True, unboxed_label=True)
    mining = json.dumps({"epochs": 3, "learning_rate": 1e-2, "negatives": 16, "pyramid_channels": 16,
                         "hidden_channels": 32, "roi_size": 7})
    pseudo_labels_main(["-d", "1", "--method", "acol", "--mining-parameters", mining, "--no-pictures"])
    folder = roots["preprocessed"] / "Dataset001_Disks" / "pseudo_labels" / "stage1"
    report = json.loads((folder / "report.json").read_text())
    assert list(report["region_miners"]) == ["1"], "label 2 has no box in any case: no miner, nothing to map"
    assert not (folder / "region_miner_label2.pth").exists() and (folder / "d_0.nii.gz").is_file()
    assert report["mean"]["1"]["dice_pseudo_mask"] > 0.5
    output = capsys.readouterr()
    assert "region miner, label 1" in output.err and "epoch(s) of 1 iteration(s)" in output.out
    # the Python API on the same dataset: label 1's miner maps a box of label 1; label 2 has none to map with
    image = read_image(roots["raw"] / "Dataset001_Disks" / "imagesTr" / "d_0_0000.nii.gz")[0]
    box = Box(1, (2, 10, 10), (3, 30, 30))
    assert pseudo_masks(image, [box], dataset="1", spacing=(3.0, 1.0, 1.0)).shape == (6, 64, 64)
    with pytest.raises(BoxunetError, match=r"box label\(s\) \[2\]: no region miner"):
        pseudo_masks(image, [Box(2, (2, 10, 10), (3, 30, 30))], dataset="1", spacing=(3.0, 1.0, 1.0))
    for case in range(4):  # no box at all (nor a labelled voxel): a clear error before any training
        (roots["raw"] / "Dataset001_Disks" / "boxesTr" / f"d_{case}.json").write_text('{"boxes": []}')
        write_image(np.zeros((6, 64, 64), np.uint8), Geometry((3.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                                                              (1, 0, 0, 0, 1, 0, 0, 0, 1), (6, 64, 64)),
                    roots["raw"] / "Dataset001_Disks" / "labelsTr" / f"d_{case}.nii.gz")
    with pytest.raises(SystemExit, match="no training case has a box"):
        pseudo_labels_main(["-d", "1", "--quiet", "--method", "acol", "--mining-parameters", mining, "--overwrite"])
