"""``Labels``: what a dataset's label values stand for, for plain labels, KiTS regions and box labels."""
import pytest

from boxunet.errors import BoxunetError
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.io.dataset_locator import DatasetFolders
from boxunet.io.labels import Labels


def test_plain_labels_with_a_box_label():
    labels = Labels.from_mapping({"background": 0, "kidney": 1, "tumor": 2}, None, [2])
    assert labels.values == [0, 1, 2] and labels.foreground_values == [1, 2] and labels.dense_values == [1]
    assert not labels.region_based and labels.regions == []
    assert labels.num_outputs == 3 and labels.output_values == [[0], [1], [2]]
    assert labels.class_names == ["kidney", "tumor"] and labels.evaluation_targets == [0, 1, 2]


def test_kits_regions():
    labels = Labels.from_mapping({"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}, [1, 3, 2])
    assert labels.values == [0, 1, 2, 3] and labels.region_based
    assert labels.regions == [(1, 2, 3), (2, 3), 2], "a one-value region stays an int (summaries key it '2')"
    assert labels.num_outputs == 3 and labels.output_values == [[1, 2, 3], [2, 3], [2]]
    assert labels.class_names == ["kidney", "masses", "tumor"] and labels.evaluation_targets == labels.regions
    assert labels.region_order == (1, 3, 2)


def test_dataset_json_and_plans_give_the_same_labels():
    description = parse_dataset_json({"channel_names": {"0": "CT"}, "numTraining": 1, "file_ending": ".nii.gz",
                                      "labels": {"background": 0, "kidney": [1, 2], "tumor": 2},
                                      "regions_class_order": [1, 2]}, "dataset.json")
    assert description.label_set == Labels.from_mapping(description.to_json()["labels"], [1, 2])
    with pytest.raises(BoxunetError, match="regions_class_order.*has 1 entries but labels define 2"):
        parse_dataset_json({"channel_names": {"0": "CT"}, "numTraining": 1, "file_ending": ".nii.gz",
                            "labels": {"background": 0, "kidney": [1, 2], "tumor": 2}, "regions_class_order": [1]},
                           "dataset.json")


def test_dataset_folders_are_resolved_once_from_the_roots(roots):
    (roots["raw"] / "Dataset001_Tiny").mkdir(parents=True)
    folders = DatasetFolders.named("Dataset001_Tiny")
    assert folders.raw == roots["raw"] / "Dataset001_Tiny" and folders.require_raw("stage 2") == folders.raw
    assert folders.preprocessed == roots["preprocessed"] / "Dataset001_Tiny"
    assert folders.results == roots["results"] / "Dataset001_Tiny"
    elsewhere = DatasetFolders.named("Dataset002_Other")
    assert elsewhere.raw is None
    with pytest.raises(BoxunetError, match="stage 2 needs the raw dataset .*Dataset002_Other; set boxunet_raw"):
        elsewhere.require_raw("stage 2")
