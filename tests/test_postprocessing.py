"""Keep-largest-component postprocessing: components, the decision on hand-made folders, applying it."""
import json

import numpy as np
import pytest

from boxunet.cli.postprocessing import main_apply, main_determine
from boxunet.errors import BoxunetError
from boxunet.io.images import Geometry, read_image, write_image
from boxunet.postprocessing.apply import apply_postprocessing_to_folder, load_postprocessing
from boxunet.postprocessing.components import keep_largest_component, remove_all_but_largest
from boxunet.postprocessing.decision import determine_postprocessing

SHAPE = (12, 12, 12)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _label_map(*boxes):
    """A SHAPE label map painted with (label, (z, y, x) start, (z, y, x) stop) boxes."""
    labels = np.zeros(SHAPE, np.uint8)
    for label, start, stop in boxes:
        labels[tuple(slice(a, b) for a, b in zip(start, stop))] = label
    return labels


def _write(folder, name, labels):
    write_image(labels, Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), SHAPE),
                folder / name)


def test_corner_touching_cubes_are_one_component_only_with_26_neighbours():
    mask = np.zeros((6, 6, 6), bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[2:5, 2:5, 2:5] = True  # 27 voxels, touching the first cube at one corner
    big = np.zeros_like(mask)
    big[2:5, 2:5, 2:5] = True
    assert np.array_equal(keep_largest_component(mask, 6), big)
    assert np.array_equal(keep_largest_component(mask, 18), big)
    assert np.array_equal(keep_largest_component(mask, 26), mask)
    assert not keep_largest_component(np.zeros((3, 3, 3), bool), 26).any()
    diagonal = np.eye(3, dtype=bool)
    assert keep_largest_component(diagonal, 4).sum() == 1 and keep_largest_component(diagonal, 8).sum() == 3
    with pytest.raises(ValueError, match="connectivity 6"):
        keep_largest_component(diagonal, 6)


def test_remove_all_but_largest_of_a_label_and_of_a_region():
    segmentation = np.array([[[1, 1, 0, 1, 2, 2, 0, 2]]], np.uint8)
    assert remove_all_but_largest(segmentation, 1, 26).tolist() == [[[1, 1, 0, 0, 2, 2, 0, 2]]]
    # as one region, labels 1 and 2 at x 3..5 form the largest component
    assert remove_all_but_largest(segmentation, (1, 2), 26).tolist() == [[[0, 0, 0, 1, 2, 2, 0, 0]]]
    assert remove_all_but_largest(segmentation, (1, 2), 26, background=9).tolist() == [[[9, 9, 0, 1, 2, 2, 0, 9]]]
    assert segmentation.tolist() == [[[1, 1, 0, 1, 2, 2, 0, 2]]]  # the input is left alone


def test_a_spurious_island_is_removed_by_whole_foreground_postprocessing(tmp_path):
    kidney, tumor = (1, (2, 2, 2), (6, 6, 6)), (2, (2, 2, 6), (6, 6, 8))  # 64 and 32 voxels, touching
    island = (1, (10, 10, 10), (12, 12, 12))  # 8 voxels far away
    _write(tmp_path / "ref", "a.nii.gz", _label_map(kidney, tumor))
    _write(tmp_path / "pred", "a.nii.gz", _label_map(kidney, tumor, island))
    decision = determine_postprocessing(tmp_path / "ref", tmp_path / "pred", [0, 1, 2], ".nii.gz", tmp_path / "pp")
    # label 1 before: 2 * 64 / (64 + 72) = 16 / 17; label 2 is perfect
    assert decision["per_label_before"] == {"1": pytest.approx(16 / 17), "2": 1.0}
    assert decision["dice_before"] == pytest.approx((16 / 17 + 1) / 2)
    assert decision["steps"] == [{"labels": [1, 2], "name": "whole foreground"}]
    assert decision["dice_after"] == 1.0 and decision["per_label_after"] == {"1": 1.0, "2": 1.0}
    assert json.loads((tmp_path / "pp" / "postprocessing.json").read_text()) == decision
    assert decision["connectivity"] == 26
    assert np.array_equal(read_image(tmp_path / "pp" / "postprocessed" / "a.nii.gz")[0], _label_map(kidney, tumor))
    summary = json.loads((tmp_path / "pp" / "postprocessed" / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] == 1.0
    assert sorted(p.name for p in (tmp_path / "pp").iterdir()) == ["postprocessed", "postprocessing.json"]


def test_a_true_second_component_rejects_the_whole_foreground_step(tmp_path):
    kidney, tumor = (1, (1, 1, 1), (5, 5, 5)), (2, (1, 1, 5), (5, 5, 7))  # 64 and 32 voxels, touching
    second_kidney = (1, (9, 9, 9), (11, 11, 11))  # a true second component of label 1 (8 voxels)
    tumor_island = (2, (9, 1, 9), (11, 3, 11))  # a false positive of label 2 (8 voxels)
    _write(tmp_path / "ref", "a.nii.gz", _label_map(kidney, tumor, second_kidney))
    _write(tmp_path / "pred", "a.nii.gz", _label_map(kidney, tumor, second_kidney, tumor_island))
    main_determine(["-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "-o", str(tmp_path / "pp"),
                    "-l", "1", "2", "-np", "1"])
    decision = json.loads((tmp_path / "pp" / "postprocessing.json").read_text())
    # the whole foreground would raise the mean ((16/17 + 1) / 2 > 17 / 18) but make label 1 worse: rejected;
    # keeping label 1's largest component alone is worse too; label 2's alone removes the island: accepted
    assert decision["per_label_before"] == {"1": 1.0, "2": pytest.approx(2 * 32 / 72)}
    assert decision["steps"] == [{"labels": [2], "name": "label 2"}]
    assert decision["dice_after"] == 1.0
    assert np.array_equal(read_image(tmp_path / "pp" / "postprocessed" / "a.nii.gz")[0],
                          _label_map(kidney, tumor, second_kidney))


def test_box_datasets_default_to_18_connectivity(roots, tmp_path):
    """[Yang 2020]'s largest-component step uses 18-connectivity: the default for a dataset with box_labels."""
    dataset = roots["raw"] / "Dataset001_Boxes"
    dataset.mkdir(parents=True)
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2}, "numTraining": 1,
        "file_ending": ".nii.gz", "box_labels": [2]}))
    # two tumor voxels that touch only at an edge: one component with 18-connectivity, two with 6
    labels = np.zeros(SHAPE, np.uint8)
    labels[5, 5, 5] = labels[5, 6, 6] = 2
    _write(tmp_path / "ref", "a.nii.gz", labels)
    _write(tmp_path / "pred", "a.nii.gz", labels)
    arguments = ["-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "-d", "1", "-np", "1"]
    main_determine(arguments + ["-o", str(tmp_path / "box")])
    assert json.loads((tmp_path / "box" / "postprocessing.json").read_text())["connectivity"] == 18
    main_determine(arguments + ["-o", str(tmp_path / "given"), "--connectivity", "6"])
    assert json.loads((tmp_path / "given" / "postprocessing.json").read_text())["connectivity"] == 6
    # labels given with -l: PRED's dataset.json (a model's validation folder has one) says box dataset
    (tmp_path / "pred" / "dataset.json").write_text((dataset / "dataset.json").read_text())
    main_determine(["-r", str(tmp_path / "ref"), "-p", str(tmp_path / "pred"), "-l", "2", "-np", "1",
                    "-o", str(tmp_path / "labels")])
    assert json.loads((tmp_path / "labels" / "postprocessing.json").read_text())["connectivity"] == 18


def test_apply_to_folder_keeps_the_geometry(tmp_path):
    labels = _label_map((1, (0, 0, 0), (3, 3, 3)), (1, (8, 8, 8), (9, 9, 9)))
    geometry = Geometry((2.5, 0.7, 0.9), (1.5, -3.25, 7.0), FLIPPED, SHAPE)
    write_image(labels, geometry, tmp_path / "in" / "case_1.nrrd")
    (tmp_path / "in" / "boxunet_plans.json").write_text("{}")
    pp_file = tmp_path / "postprocessing.json"
    pp_file.write_text(json.dumps({"connectivity": 6, "steps": [{"labels": [1], "name": "label 1"}]}))
    written = apply_postprocessing_to_folder(tmp_path / "in", tmp_path / "out", pp_file)  # ending inferred
    assert written == [tmp_path / "out" / "case_1.nrrd"]
    result, result_geometry = read_image(written[0])
    assert result_geometry == read_image(tmp_path / "in" / "case_1.nrrd")[1]
    assert np.array_equal(result, _label_map((1, (0, 0, 0), (3, 3, 3))))
    assert (tmp_path / "out" / "boxunet_plans.json").read_text() == "{}"


def test_malformed_or_missing_postprocessing_file(tmp_path):
    with pytest.raises(BoxunetError, match="not found"):
        load_postprocessing(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"connectivity": 26, "steps": [{"labels": []}]}))
    with pytest.raises(BoxunetError, match='step 0: "labels"'):
        load_postprocessing(tmp_path / "bad.json")


def test_apply_command_refuses_to_write_into_its_input_folder(tmp_path, capsys):
    _write(tmp_path / "in", "a.nii.gz", _label_map((1, (0, 0, 0), (2, 2, 2))))
    pp_file = tmp_path / "postprocessing.json"
    pp_file.write_text(json.dumps({"connectivity": 26, "steps": []}))
    with pytest.raises(SystemExit) as exit_info:
        main_apply(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "in"), "-pp", str(pp_file)])
    assert "inside the input folder" in str(exit_info.value.code)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.nii.gz"]
