"""Export: perfect logits of a preprocessed case go back to the raw image's grid, geometry and labels."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from boxunet.inference.export import (BACKGROUND_LOGIT, export_prediction, logits_to_segmentation,
                                      revert_preprocessing)
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import Geometry, read_image
from boxunet.planning.planner import plan_experiment
from boxunet.preprocessing.case import preprocess_case

CT_STATS = {"mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 3000.0,
            "percentile_00_5": -80.0, "percentile_99_5": 300.0}
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _plans(spacing):
    fingerprint = {"spacings": [list(spacing)] * 3, "shapes_after_crop": [[10, 30, 26]] * 3,
                   "median_relative_size_after_cropping": 0.8,
                   "foreground_intensity_properties_per_channel": {"0": CT_STATS}}
    description = parse_dataset_json({"channel_names": {"0": "CT"}, "numTraining": 3, "file_ending": ".nii.gz",
                                      "labels": {"background": 0, "kidney": 1, "tumor": 2}})
    return plan_experiment(fingerprint, description, "Dataset009_Export")


def _raw_case(shape=(10, 30, 26)):
    """Zero outside [1:9, 3:28, 2:24] (so cropping removes a border), a kidney (1) holding a tumor (2)."""
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    image = np.zeros(shape, np.int16)
    image[1:9, 3:28, 2:24] = 50
    kidney = ((z - 5) / 3.5) ** 2 + ((y - 14) / 9) ** 2 + ((x - 12) / 8) ** 2 < 1
    tumor = ((z - 5) / 2.5) ** 2 + ((y - 16) / 5) ** 2 + ((x - 14) / 5) ** 2 < 1
    label = np.zeros(shape, np.uint8)
    label[kidney], label[tumor] = 1, 2
    image[kidney] = 180
    return image, label


def _perfect_logits(seg: np.ndarray, num_classes: int) -> torch.Tensor:
    classes = np.maximum(seg[0], 0)  # -1 (outside the nonzero mask) is background
    return torch.from_numpy(np.eye(num_classes, dtype=np.float32)[classes].transpose(3, 0, 1, 2) * 10)


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _round_trip(tmp_path, image, label, geometry, plans, save_probabilities=False):
    configurations = [plans.configurations["3d_fullres"], plans.configurations["2d"]]
    written = {}
    for configuration, data, seg, properties in preprocess_case(image[None], geometry, plans, configurations,
                                                                label[None], case_id="case_7"):
        properties = json.loads(json.dumps(properties))  # as loaded from the stored properties file
        output = tmp_path / configuration.name / "case_7.nii.gz"
        assert export_prediction(_perfect_logits(seg, 3), properties, plans, configuration, output,
                                 save_probabilities) == output
        written[configuration.name] = output
    for output in written.values():
        prediction, prediction_geometry = read_image(output)
        assert geometry.mismatch(prediction_geometry) is None
        assert prediction.dtype == np.uint8
        for value in (1, 2):
            assert _dice(prediction == value, label == value) > 0.95
    return written


def test_round_trip_restores_geometry_and_labels(tmp_path):
    plans = _plans((3.0, 0.9, 0.9))
    assert plans.transpose_forward == [0, 1, 2]
    image, label = _raw_case()
    geometry = Geometry((3.5, 0.8, 0.8), (12.0, -4.0, 7.5), FLIPPED, image.shape)
    _round_trip(tmp_path, image, label, geometry, plans)


def test_round_trip_of_a_transposed_case(tmp_path):
    # KiTS NIfTI order: the coarse axis is the last array axis
    plans = _plans((0.9, 0.9, 3.0))
    assert plans.transpose_forward == [2, 0, 1]
    image, label = (a.transpose(1, 2, 0) for a in _raw_case())
    geometry = Geometry((0.8, 0.8, 3.5), (1.0, 2.0, 3.0), FLIPPED, image.shape)
    _round_trip(tmp_path, image, label, geometry, plans)


def test_round_trip_at_the_raw_spacing_is_exact(tmp_path):
    plans = _plans((0.8, 0.8, 3.5))  # target = raw spacing: only transpose, crop and their inverses
    image, label = (a.transpose(1, 2, 0) for a in _raw_case())
    geometry = Geometry((0.8, 0.8, 3.5), (1.0, 2.0, 3.0), FLIPPED, image.shape)
    configuration = plans.configurations["3d_fullres"]
    (_, _, seg, properties), = preprocess_case(image[None], geometry, plans, [configuration], label[None])
    assert properties["shape_after_cropping_and_before_resampling"] != list(image.shape)
    output = export_prediction(_perfect_logits(seg, 3), properties, plans, configuration, tmp_path / "c.nii.gz")
    assert np.array_equal(read_image(output)[0], label)


def test_saved_probabilities_and_properties(tmp_path):
    plans = _plans((0.9, 0.9, 3.0))
    image, label = (a.transpose(1, 2, 0) for a in _raw_case())
    geometry = Geometry((0.8, 0.8, 3.5), (1.0, 2.0, 3.0), FLIPPED, image.shape)
    output = _round_trip(tmp_path, image, label, geometry, plans, save_probabilities=True)["3d_fullres"]
    probabilities = np.load(output.parent / "case_7.npz")["probabilities"]
    assert probabilities.dtype == np.float16 and probabilities.shape == (3,) + image.shape
    assert np.allclose(probabilities.astype(np.float32).sum(axis=0), 1, atol=2e-3)
    segmentation, _ = read_image(output)
    assert np.array_equal(np.argmax(probabilities, axis=0), segmentation)
    # the raw array's first y column lies outside the nonzero crop: confident background
    assert probabilities[:, :, 0].reshape(3, -1).T.tolist() == [[1, 0, 0]] * (30 * 10)
    properties = json.loads((output.parent / "case_7.json").read_text())
    assert properties["case_id"] == "case_7" and properties["transpose_forward"] == [2, 0, 1]


def test_revert_preprocessing_fills_the_background_outside_the_crop():
    plans = _plans((3.0, 0.9, 0.9))
    configuration = plans.configurations["3d_fullres"]
    properties = {"geometry": {"shape": [4, 5, 6]}, "bbox_used_for_cropping": [[1, 3], [0, 5], [2, 6]],
                  "shape_after_cropping_and_before_resampling": [2, 5, 4], "shape_after_resampling": [2, 5, 4],
                  "spacing": [3.0, 0.9, 0.9], "spacing_after_transpose": [3.0, 0.9, 0.9]}
    array = np.full((3, 2, 5, 4), 0.25, np.float32)
    probabilities = revert_preprocessing(array, properties, plans, configuration)
    assert probabilities.shape == (3, 4, 5, 6)
    assert np.all(probabilities[:, 1:3, :, 2:6] == 0.25)
    assert probabilities[:, 0, 0, 0].tolist() == [1, 0, 0] and probabilities[:, 3, 4, 1].tolist() == [1, 0, 0]
    logits = revert_preprocessing(array, properties, plans, configuration, order=0, logits=True)
    assert logits[:, 0, 0, 0].tolist() == [0, BACKGROUND_LOGIT, BACKGROUND_LOGIT]
    with pytest.raises(ValueError, match="does not match the preprocessed shape"):
        revert_preprocessing(array[:, :1], properties, plans, configuration)


def test_logits_to_segmentation_softmax_and_regions():
    plans = _plans((3.0, 0.9, 0.9))
    logits = torch.tensor([[[[2.0, 0.0, -1.0]]], [[[1.0, 3.0, -2.0]]], [[[0.0, 1.0, 5.0]]]])  # (3, 1, 1, 3)
    assert logits_to_segmentation(logits, plans).tolist() == [[[0, 1, 2]]]
    regions = dataclasses.replace(plans, labels={"background": 0, "kidney": [1, 2], "tumor": 2},
                                  regions_class_order=[1, 2])
    # sigmoid > 0.5 <=> logit > 0; the tumor region (painted last) overwrites the kidney region
    region_logits = np.array([[[[1.0, 1.0, -1.0, -3.0]]], [[[-1.0, 2.0, 4.0, -0.5]]]])
    assert logits_to_segmentation(region_logits, regions).tolist() == [[[1, 2, 2, 0]]]


def test_kits_regions_round_trip_through_the_region_order():
    """KiTS21/23 labels -> the region targets training uses -> confident region logits -> labels again."""
    plans = dataclasses.replace(_plans((3.0, 0.9, 0.9)), regions_class_order=[1, 3, 2],
                                labels={"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2})
    from boxunet.training.losses import labels_to_regions
    labels = np.random.default_rng(0).integers(0, 4, size=(1, 1, 4, 5, 6))
    targets = labels_to_regions(torch.from_numpy(labels), plans.label_set.regions)  # what training uses
    assert targets.shape == (1, 3, 4, 5, 6)
    assert torch.equal(targets[0, 1].bool(), torch.from_numpy(np.isin(labels[0, 0], [2, 3])))
    logits = (targets[0] * 2 - 1) * 10  # certain regions
    assert np.array_equal(logits_to_segmentation(logits, plans), labels[0, 0])
