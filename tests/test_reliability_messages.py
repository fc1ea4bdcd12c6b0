"""Messages instead of tracebacks (issue 22, items 10 and 12): malformed dataset.json and box files, bools where
numbers belong, label values that clash, unreadable probabilities, and file systems that refuse a write."""
import errno
import json

import numpy as np
import pytest
from test_ensemble import PROBABILITIES, _prediction_folder

from boxunet.cli.common import run_cli
from boxunet.cli.ensemble import main as ensemble_main
from boxunet.errors import BoxunetError
from boxunet.io.boxes import read_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image, write_image
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess

GOOD = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2}, "numTraining": 2,
        "file_ending": ".nii.gz", "box_labels": [2]}


@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", r"must be a JSON object .*not a list"),
    (b'{"channel_names": {"0": "CT\xff"}}', r"is not UTF-8 text \(byte 27\)"),
    (json.dumps(dict(GOOD, numTraining=True)).encode(), r'"numTraining" must be a non-negative int; got True'),
    (json.dumps(dict(GOOD, box_labels=[True])).encode(), r'"box_labels" must be a list of label values; got \[True\]'),
    (json.dumps(dict(GOOD, labels={"background": 0, "kidney": 1, "tumor": 1})).encode(),
     r"labels 'kidney' and 'tumor' both have the value 1"),
    (json.dumps(dict(GOOD, labels={"tumor": 0, "background": 1})).encode(),
     r'"background" must have the value 0; got 1'),
])
def test_a_malformed_dataset_json_is_one_line_naming_the_file(tmp_path, content, message):
    (tmp_path / "dataset.json").write_bytes(content)
    with pytest.raises(BoxunetError, match=rf"file .*dataset.json: {message}"):
        load_dataset_json(tmp_path)


def test_a_box_file_nested_too_deeply_or_with_bool_labels(tmp_path):
    path = tmp_path / "case.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BoxunetError, match=r"case.json: is not valid JSON for boxunet: it nests too deeply"):
        read_boxes(path)
    path.write_text(json.dumps({"boxes": [{"label": True, "min": [0, 0, 0], "max": [1, 1, 1]}]}))
    with pytest.raises(BoxunetError, match=r"box 0 must have an int label"):
        read_boxes(path)


@pytest.mark.parametrize("damage", ["truncated", "pickled"])
def test_unreadable_probabilities_name_their_case(tmp_path, damage, capsys):
    first = _prediction_folder(tmp_path / "A", PROBABILITIES["A"])
    second = _prediction_folder(tmp_path / "B", PROBABILITIES["B"])
    npz = second / "b.npz"
    if damage == "truncated":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    else:
        np.savez(npz, probabilities=np.array([{"payload": 1}], dtype=object))
    with pytest.raises(SystemExit, match=rf"b.npz: not a probabilities file written by boxunet .*predict case b again"):
        ensemble_main(["-i", str(first), str(second), "-o", str(tmp_path / "out"), "-np", "0"])
    assert not (tmp_path / "out" / "b.nrrd").exists()


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "no space left on device"),
                                           (errno.EACCES, "permission denied"),
                                           (errno.EEXIST, "a file is in the way")])
def test_a_refusing_file_system_is_one_line_naming_the_file(code, message):
    def write():
        raise OSError(code, "from the kernel", "/data/out/checkpoint_latest.pth")
    with pytest.raises(SystemExit, match=rf"^error: {message}: /data/out/checkpoint_latest.pth; rerun with --c$"):
        run_cli(write, interrupted_hint="rerun with --c")
    with pytest.raises(OSError):  # other OS errors keep their traceback: they are bugs, not input
        run_cli(lambda: (_ for _ in ()).throw(OSError(errno.EBADF, "bad file descriptor")))


def test_an_all_zero_image_is_warned_about(tiny_dataset, capsys):
    path = tiny_dataset / "imagesTr" / "case_001_0000.nii.gz"
    image, geometry = read_image(path)
    write_image(np.zeros_like(image), geometry, path)
    plan_and_preprocess("1", PlanAndPreprocessOptions(verify_only=True, num_processes=1, progress=False))
    assert capsys.readouterr().err == (f"warning: case 'case_001', file {path}: every voxel is 0: the case is "
                                       "cropped to nothing and adds nothing to training (an empty or failed export?)\n")
