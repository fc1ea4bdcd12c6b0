"""Files never land outside their folder: plain file endings only, and symlinks are replaced, not written through."""
import json

import pytest

from boxunet.errors import BoxunetError
from boxunet.io.atomic import copy_file
from boxunet.io.dataset_json import file_ending_problem
from boxunet.io.model_folder import read_model_files, write_model_files
from boxunet.paths import DATASET_JSON, PLANS_FILE_NAME, model_folder_name
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions
from boxunet.planning.planner import plans_file


@pytest.mark.parametrize("ending, plain", [(".nii.gz", True), (".nrrd", True), (".mha", True),
                                           ("./../../../ESCAPED.nii.gz", False), (".nii/gz", False),
                                           ("nii.gz", False), (".", False), ("..", False), (True, False)])
def test_file_endings_are_plain(ending, plain):
    assert (file_ending_problem(ending) is None) == plain


def test_a_prediction_folder_with_an_escaping_file_ending_is_refused(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    (folder / PLANS_FILE_NAME).write_text("{}")
    (folder / DATASET_JSON).write_text(json.dumps({"file_ending": "./../../../ESCAPED.nii.gz"}))
    with pytest.raises(BoxunetError, match=r"predictions/dataset.json: \"file_ending\" must be a plain file ending"):
        read_model_files(folder, "prediction folder")  # what boxunet_ensemble reads first


def test_a_dataset_json_symlink_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    source = tmp_path / "source.json"
    source.write_text('{"file_ending": ".nii.gz"}')
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / DATASET_JSON).symlink_to(outside)
    write_model_files(folder, {"plans": 1}, source)
    assert outside.read_text() == "keep me"
    assert not (folder / DATASET_JSON).is_symlink() and (folder / DATASET_JSON).read_text() == source.read_text()
    (folder / "postprocessing.json").symlink_to(outside)
    copy_file(source, folder / "postprocessing.json")  # as boxunet_find_best_configuration copies its decisions
    assert outside.read_text() == "keep me" and not (folder / "postprocessing.json").is_symlink()


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".hidden", "", "x" * 101])
@pytest.mark.slow
def test_names_that_become_paths_must_be_safe(name, tiny_dataset, roots):
    with pytest.raises(BoxunetError, match="is not a safe name"):
        PlanAndPreprocessOptions(plans_name=name)  # boxunet_plan_and_preprocess -p NAME
    with pytest.raises(BoxunetError, match="is not a safe name"):
        plans_file(roots["preprocessed"], name)  # boxunet_train / boxunet_predict -p NAME
    for parts in ((name, "boxunetPlans", "3d_fullres"), ("FullySupervised", name, "3d_fullres"),
                  ("FullySupervised", "boxunetPlans", name)):
        with pytest.raises(BoxunetError, match="is not a safe name"):
            model_folder_name(*parts)
    assert not roots["preprocessed"].exists()
    assert model_folder_name("BoxThreeStage", "boxunetPlans_v2", "3d_cascade_fullres") == \
        "BoxThreeStage__boxunetPlans_v2__3d_cascade_fullres"
