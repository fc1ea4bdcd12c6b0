"""Stage 1 of the box trainer: pseudo masks from boxes (ConvCRF, boxfill) and boxunet_pseudo_labels."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import two_intensity_volume, write_tiny_dataset

from boxunet.boxes.pseudo_masks import (CRFRegion, PseudoMaskParameters, crf_probabilities, pseudo_masks,
                                        region_batches, tight_box_mask)
from boxunet.cli.pseudo_labels import main as pseudo_labels_main
from boxunet.errors import BoxunetError
from boxunet.evaluation.metrics import dice
from boxunet.io.boxes import Box, box_mask, boxes_from_label_map, write_boxes
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import read_image, write_image
from dataset_conversion.labels_to_boxes import labels_to_boxes


def test_convcrf_recovers_the_object_inside_its_box():
    image, inner, spacing = two_intensity_volume()
    boxes = boxes_from_label_map(inner.astype(np.uint8), 1)
    assert len(boxes) == 1
    box_dice = dice(box_mask(inner.shape, boxes), inner)
    assert box_dice == pytest.approx(0.769, abs=0.001)  # the voxelized ellipsoid fills 62% of its box
    result = pseudo_masks(image, spacing, boxes, [1]) == 1
    assert dice(result, inner) > 0.95
    assert not (result & ~box_mask(inner.shape, boxes)).any(), "nothing outside the box"


def test_tightness_adds_the_most_probable_candidate_of_every_empty_box_slice():
    probability = np.zeros((1, 3, 4), np.float32)
    probability[0, 0, 0], probability[0, 1, 1], probability[0, 2, 3] = 0.9, 0.2, 0.3
    box, region = Box(1, (0, 0, 0), (1, 3, 4)), (slice(0, 1), slice(0, 3), slice(0, 4))
    candidates = np.ones(probability.shape, bool)
    loose = tight_box_mask(probability, candidates, box, region, 0.5, tightness=False)
    assert np.argwhere(loose).tolist() == [[0, 0, 0]]
    # rows y = 1, 2 take their best voxel; column x = 2 (all 0) then takes its first candidate
    tight = tight_box_mask(probability, candidates, box, region, 0.5, tightness=True)
    assert np.argwhere(tight).tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 2, 3]]
    candidates[0, 0, 2] = False
    tight = tight_box_mask(probability, candidates, box, region, 0.5, tightness=True)
    assert np.argwhere(tight).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 2], [0, 2, 3]]


def test_tightness_keeps_an_object_of_a_few_voxels_that_the_crf_erases():
    image = np.zeros((1, 12, 12, 12), np.float32)
    image[0, 6, 5:7, 5:7] = 1.0  # a 1 x 2 x 2 object filling its tight box: every voxel is on the box border
    image += np.random.default_rng(0).normal(0, 0.1, image.shape).astype(np.float32)
    boxes = [Box(2, (6, 5, 5), (7, 7, 7))]
    erased = pseudo_masks(image, (3.0, 1.0, 1.0), boxes, [2], parameters=PseudoMaskParameters(tightness=False))
    assert not (erased == 2).any()
    kept = pseudo_masks(image, (3.0, 1.0, 1.0), boxes, [2]) == 2
    assert 3 <= kept.sum() <= 4 and not (kept & ~box_mask(kept.shape, boxes)).any()


def test_box_regions_run_batched_give_the_probabilities_of_one_by_one():
    rng = np.random.default_rng(3)
    shapes = [(6, 10, 9), (5, 7, 12), (3, 4, 4)]
    # 540 + 420 voxels padded to 6 x 10 x 12 (1440) stay within 2x; adding the third (3 x 720) would not
    assert region_batches(shapes) == [[0, 1], [2]]
    assert region_batches([(128, 128, 160)] * 2) == [[0], [1]], "2 x 2.6 M voxels exceed the 4.2 M batch cap"
    regions = []
    for shape in shapes:
        in_box = np.zeros(shape, bool)
        in_box[1:-1, 1:-1, 1:-1] = True
        regions.append(CRFRegion(rng.normal(size=(1,) + shape).astype(np.float32), in_box, ~in_box,
                                 rng.normal(size=shape).astype(np.float32)))
    parameters = PseudoMaskParameters()
    together = crf_probabilities(regions, (2.0, 1.0, 1.0), parameters)
    for region, batched in zip(regions, together):
        alone = crf_probabilities([region], (2.0, 1.0, 1.0), parameters)[0]
        assert batched.shape == region.prior.shape
        np.testing.assert_allclose(batched, alone, atol=1e-5)
        assert (batched[~region.box_region_mask] == 0).all()


def test_dense_labels_are_trusted_and_boxfill_fills_the_rest():
    image, inner, spacing = two_intensity_volume()
    dense = np.zeros(inner.shape, np.uint8)
    dense[:, :20, :] = 3  # another class known on half of the box
    dense[inner] = 2  # the box label in the dense map is a reference only: it is ignored
    boxes = [Box(2, (2, 8, 9), (18, 32, 30))]
    filled = pseudo_masks(image, spacing, boxes, [2], dense, method="boxfill")
    inside = box_mask(inner.shape, boxes)
    assert np.array_equal(filled == 2, inside & (dense != 3))
    assert np.array_equal(filled == 3, dense == 3)
    crf = pseudo_masks(image, spacing, boxes, [2], dense)
    assert np.array_equal(crf == 3, dense == 3) and not ((crf == 2) & (dense == 3)).any()
    with pytest.raises(ValueError, match="unknown pseudo-mask method"):
        pseudo_masks(image, spacing, boxes, [2], method="grabcut")


def _stage1(roots):
    return roots["preprocessed"] / "Dataset001_Tiny" / "pseudo_labels" / "stage1"


def test_pseudo_labels_cli_writes_masks_with_raw_geometry_and_a_report(tiny_dataset, roots, capsys):
    pseudo_labels_main(["-d", "1", "--quiet"])
    folder = _stage1(roots)
    report = json.loads((folder / "report.json").read_text())
    assert report["method"] == "convcrf" and len(report["cases"]) == 4
    assert report["parameters"]["tightness"] is True, "tight boxes (no box_margins): the tightness rule applies"
    mean = report["mean"]["2"]
    assert mean["cases_with_reference"] == 4
    assert mean["dice_boxes"] == pytest.approx(0.8095, abs=1e-4)
    assert mean["dice_pseudo_mask"] > 0.95
    for index in range(4):
        raw_image = sitk.ReadImage(str(tiny_dataset / "imagesTr" / f"case_{index:03d}_0000.nii.gz"))
        written = sitk.ReadImage(str(folder / f"case_{index:03d}.nii.gz"))
        assert written.GetSize() == raw_image.GetSize()
        assert np.allclose(written.GetSpacing(), raw_image.GetSpacing())
        assert np.allclose(written.GetOrigin(), raw_image.GetOrigin())
        labels = sitk.GetArrayFromImage(written)
        reference = read_image(tiny_dataset / "labelsTr" / f"case_{index:03d}.nii.gz")[0]
        assert np.array_equal(labels == 1, reference == 1), "the dense kidney labels are kept as given"
    assert sorted(p.name for p in (folder / "pictures").iterdir()) == [f"case_{i:03d}.png" for i in range(4)]
    # rerunning resumes: nothing is recomputed; --overwrite recomputes
    stamp = (folder / "case_000.nii.gz").stat().st_mtime_ns
    pseudo_labels_main(["-d", "1", "--quiet"])
    assert (folder / "case_000.nii.gz").stat().st_mtime_ns == stamp
    pseudo_labels_main(["-d", "1", "--quiet", "--method", "boxfill"])  # other settings: recomputed
    assert (folder / "case_000.nii.gz").stat().st_mtime_ns != stamp
    boxfill = json.loads((folder / "report.json").read_text())["mean"]["2"]
    assert boxfill["dice_pseudo_mask"] < mean["dice_pseudo_mask"]


def test_boxes_with_a_margin_turn_the_tightness_rule_off(tiny_dataset, roots):
    labels_to_boxes(tiny_dataset, [2], margin=1)
    assert json.loads((tiny_dataset / "dataset.json").read_text())["box_margins"] == {"2": 1}
    pseudo_labels_main(["-d", "1", "--quiet", "--no-pictures"])
    assert not (_stage1(roots) / "pictures").exists()
    report = json.loads((_stage1(roots) / "report.json").read_text())
    assert report["parameters"]["tightness"] is False
    assert report["mean"]["2"]["dice_pseudo_mask"] > report["mean"]["2"]["dice_boxes"]


def test_box_margins_must_map_box_labels_to_voxels():
    description = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2},
                   "numTraining": 1, "file_ending": ".nii.gz", "box_labels": [2]}
    assert parse_dataset_json({**description, "box_margins": {"2": 3}}).box_margins == {2: 3}
    assert parse_dataset_json(description).tight_boxes
    for wrong in ({"1": 2}, {"2": -1}, {"2": 1.5}, [2]):
        with pytest.raises(BoxunetError, match="box_margins"):
            parse_dataset_json({**description, "box_margins": wrong})


def test_tune_picks_parameters_on_reference_cases(tiny_dataset, roots):
    pseudo_labels_main(["-d", "1", "--quiet", "--tune", "--tune-cases", "2"])
    report = json.loads((_stage1(roots) / "report.json").read_text())
    tuning = report["tuning"]
    assert tuning["cases"] == ["case_000", "case_001"] and tuning["history"][0]["parameters"] == "start"
    assert tuning["dice"] >= tuning["history"][0]["dice"]


def test_labels_outside_their_boxes_are_an_error_before_anything_is_written(tiny_dataset, roots):
    write_boxes([Box(2, (0, 0, 0), (2, 2, 2))], tiny_dataset / "boxesTr" / "case_001.json")
    with pytest.raises(SystemExit, match=r"case_001.*labelsTr/case_001.nii.gz.*outside every box of label 2"):
        pseudo_labels_main(["-d", "1", "--quiet"])
    assert not _stage1(roots).exists()


def test_nan_image_and_dataset_without_boxes_are_errors(roots):
    tiny_dataset = write_tiny_dataset(roots["raw"], file_ending=".mha")  # NIfTI I/O turns NaN into 0
    path = tiny_dataset / "imagesTr" / "case_002_0000.mha"
    image, geometry = read_image(path)
    image = image.astype(np.float32)
    image[0, 0, 0] = np.nan
    write_image(image, geometry, path)
    with pytest.raises(SystemExit, match=r"case_002.*NaN"):
        pseudo_labels_main(["-d", "1", "--quiet"])
    assert not _stage1(roots).exists()
    description = json.loads((tiny_dataset / "dataset.json").read_text())
    del description["box_labels"]
    (tiny_dataset / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(SystemExit, match="no \"box_labels\""):
        pseudo_labels_main(["-d", "1", "--quiet"])


def test_a_case_without_boxes_gets_no_box_label(tiny_dataset, roots):
    labels, geometry = read_image(tiny_dataset / "labelsTr" / "case_003.nii.gz")
    labels[labels == 2] = 0
    write_image(labels, geometry, tiny_dataset / "labelsTr" / "case_003.nii.gz")
    write_boxes([], tiny_dataset / "boxesTr" / "case_003.json")
    pseudo_labels_main(["-d", "1", "--quiet"])
    record = json.loads((_stage1(roots) / "case_003.json").read_text())
    assert record["labels"]["2"]["boxes"] == 0 and record["labels"]["2"]["pseudo_mask_voxels"] == 0
