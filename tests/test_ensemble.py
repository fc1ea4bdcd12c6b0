"""Ensembling: averaged hand-made probabilities of two prediction folders become label maps."""
import dataclasses
import json
import re

import numpy as np
import pytest

from boxunet.cli.ensemble import main
from boxunet.errors import BoxunetError
from boxunet.inference.ensemble import ensemble_folders
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.images import Geometry, read_image
from boxunet.io.probabilities import read_probabilities, write_probabilities
from boxunet.paths import PLANS_FILE_NAME
from boxunet.planning.planner import plan_experiment
from boxunet.planning.plans import save_plans

FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
DATASET_JSON = {"channel_names": {"0": "CT"}, "numTraining": 2, "file_ending": ".nrrd",
                "labels": {"background": 0, "kidney": 1, "tumor": 2}}
REGIONS_JSON = dict(DATASET_JSON, labels={"background": 0, "kidney": [1, 2], "tumor": 2}, regions_class_order=[1, 2])
GEOMETRIES = {"a": Geometry((2.5, 0.75, 1.25), (12.0, -4.0, 7.5), FLIPPED, (1, 2, 3)),
              "b": Geometry((1.0, 2.0, 0.5), (0.0, 1.0, -2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 1, 2)),
              "c": Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 2, 2))}
# per case: voxels (raw array order, flattened) x classes; folder "A" and folder "B"
PROBABILITIES = {
    "A": {"a": [[0.8, 0.1, 0.1], [0.1, 0.5, 0.4], [0.6, 0.4, 0.0], [0.3, 0.0, 0.7], [0.0, 0.9, 0.1], [0.5, 0.1, 0.4]],
          "b": [[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]]},
    "B": {"a": [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.3, 0.6, 0.1], [0.6, 0.0, 0.4], [0.1, 0.1, 0.8]],
          "b": [[0.6, 0.1, 0.3], [0.1, 0.1, 0.8]]},
}


def _plans(dataset_json):
    fingerprint = {"spacings": [[1.0, 1.0, 1.0]] * 2, "shapes_after_crop": [[10, 30, 26]] * 2,
                   "median_relative_size_after_cropping": 1.0,
                   "foreground_intensity_properties_per_channel": {"0": {
                       "mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 3000.0,
                       "percentile_00_5": -80.0, "percentile_99_5": 300.0}}}
    plans = plan_experiment(fingerprint, parse_dataset_json(DATASET_JSON), "Dataset009_Ensemble")
    return dataclasses.replace(plans, labels=dataset_json["labels"],
                               regions_class_order=dataset_json.get("regions_class_order"))


def _prediction_folder(folder, probabilities, dataset_json=DATASET_JSON):
    """A prediction folder with <case>.npz/<case>.json per case, the plans and dataset.json."""
    folder.mkdir(parents=True)
    save_plans(_plans(dataset_json), folder / PLANS_FILE_NAME)
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    for case_id, voxels in probabilities.items():
        geometry = GEOMETRIES[case_id]
        array = np.asarray(voxels, np.float32).T.reshape((-1,) + geometry.shape)
        write_probabilities(array, {"case_id": case_id, "geometry": geometry.to_json()}, folder / case_id)
    return folder


def test_averaged_probabilities_flip_the_argmax(tmp_path):
    folders = [_prediction_folder(tmp_path / name, PROBABILITIES[name]) for name in ("A", "B")]
    assert ensemble_folders(folders, tmp_path / "out") == ["a", "b"]
    # a: A alone gives [0, 1, 0, 2, 1, 0], B alone [0, 2, 1, 1, 0, 2]; b: A gives [1, 0], B [0, 2]
    expected = {"a": [[[0, 2, 1], [2, 1, 2]]], "b": [[[0, 0]]]}
    for case_id, labels in expected.items():
        segmentation, geometry = read_image(tmp_path / "out" / f"{case_id}.nrrd")
        assert segmentation.tolist() == labels and segmentation.dtype == np.uint8
        assert geometry == GEOMETRIES[case_id]
    assert json.loads((tmp_path / "out" / "dataset.json").read_text()) == DATASET_JSON
    assert (tmp_path / "out" / PLANS_FILE_NAME).is_file()
    assert not (tmp_path / "out" / "a.npz").exists()


def test_region_probabilities_are_thresholded_at_one_half(tmp_path):
    # channels kidney ([1, 2]) then tumor (2), painted in that order
    a = {"c": [[0.6, 0.2], [0.6, 0.7], [0.4, 0.5], [0.9, 0.3]]}  # alone: [1, 2, 0, 1]
    b = {"c": [[0.5, 0.1], [0.2, 0.5], [0.7, 0.6], [0.05, 0.6]]}  # alone: [0, 0, 2, 2]
    folders = [_prediction_folder(tmp_path / name, probabilities, REGIONS_JSON)
               for name, probabilities in (("A", a), ("B", b))]
    main(["-i", str(folders[0]), str(folders[1]), "-o", str(tmp_path / "out"), "--save-probabilities", "-np", "1"])
    # average: kidney [0.55, 0.4, 0.55, 0.475], tumor [0.15, 0.6, 0.55, 0.45]
    assert read_image(tmp_path / "out" / "c.nrrd")[0].tolist() == [[[1, 2], [2, 0]]]
    averaged = read_probabilities(tmp_path / "out" / "c")
    assert averaged.dtype == np.float16 and averaged.shape == (2, 1, 2, 2)
    assert np.allclose(averaged.reshape(2, 4).T, [[0.55, 0.15], [0.4, 0.6], [0.55, 0.55], [0.475, 0.45]], atol=1e-3)
    assert json.loads((tmp_path / "out" / "c.json").read_text())["case_id"] == "c"


def test_missing_case_is_named(tmp_path):
    first = _prediction_folder(tmp_path / "A", PROBABILITIES["A"])
    second = _prediction_folder(tmp_path / "B", {"a": PROBABILITIES["B"]["a"]})
    with pytest.raises(BoxunetError, match=re.escape(f"{second} lacks b")):
        ensemble_folders([first, second], tmp_path / "out")
    with pytest.raises(BoxunetError, match="inside the input folder"):
        ensemble_folders([first, second], first)


def test_shapes_must_agree_and_two_folders_are_needed(tmp_path):
    first = _prediction_folder(tmp_path / "A", {"b": PROBABILITIES["A"]["b"]})
    second = _prediction_folder(tmp_path / "B", {"b": PROBABILITIES["B"]["b"]})
    write_probabilities(np.full((3, 1, 1, 3), 1 / 3), {"geometry": GEOMETRIES["b"].to_json()}, second / "b")
    with pytest.raises(BoxunetError, match=r"case 'b': probabilities of shape \[3, 1, 1, 3\] in .*B differ"):
        ensemble_folders([first, second], tmp_path / "out")
    with pytest.raises(SystemExit):
        main(["-i", str(first), "-o", str(tmp_path / "out")])
