"""Dataset converters (KiTS19/21/23, MSD) and labels -> boxes, on tiny fake datasets."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from boxunet.errors import BoxunetError
from boxunet.io.boxes import Box, read_boxes, write_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_image
from dataset_conversion import kits, labels_to_boxes, msd, nnunet

SHAPE = (8, 10, 12)


def write_volume(array, path, spacing=(0.8, 0.8, 3.0), origin=(1.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_kits(case_folder, num_labelled, num_unlabelled=0, segmentation="segmentation.nii.gz", max_label=2):
    rng = np.random.default_rng(0)
    for index in range(num_labelled + num_unlabelled):
        case = case_folder / f"case_{index:05d}"
        write_volume(rng.integers(-1000, 1000, SHAPE).astype(np.int16), case / "imaging.nii.gz")
        if index < num_labelled:
            write_volume(rng.integers(0, max_label + 1, SHAPE).astype(np.uint8), case / segmentation)


def read_dataset_json(folder):
    return json.loads((folder / "dataset.json").read_text())


def test_kits19_training_and_test_cases(tmp_path):
    make_kits(tmp_path / "kits19" / "data", num_labelled=2, num_unlabelled=1)
    kits.main_kits19(["-i", str(tmp_path / "kits19"), "-o", str(tmp_path / "raw")])
    out = tmp_path / "raw" / "Dataset064_KiTS19"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["case_00000_0000.nii.gz", "case_00001_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case_00000.nii.gz", "case_00001.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["case_00002_0000.nii.gz"]
    data = read_dataset_json(out)
    assert data["labels"] == {"background": 0, "kidney": 1, "tumor": 2}
    assert data["numTraining"] == 2 and data["channel_names"] == {"0": "CT"} and data["file_ending"] == ".nii.gz"
    source = tmp_path / "kits19" / "data" / "case_00001"
    assert (out / "labelsTr" / "case_00001.nii.gz").read_bytes() == (source / "segmentation.nii.gz").read_bytes()
    assert os.stat(out / "labelsTr" / "case_00001.nii.gz").st_nlink == 2  # hard link by default
    assert (out / "imagesTr" / "case_00001_0000.nii.gz").read_bytes() == (source / "imaging.nii.gz").read_bytes()


@pytest.mark.parametrize("main, layout, segmentation, folder_name", [
    (kits.main_kits21, "kits21/data", "aggregated_MAJ_seg.nii.gz", "Dataset135_KiTS2021"),
    (kits.main_kits23, "dataset", "segmentation.nii.gz", "Dataset220_KiTS2023"),
])
def test_kits21_and_23_use_regions(tmp_path, main, layout, segmentation, folder_name):
    make_kits(tmp_path / "repo" / layout, num_labelled=2, segmentation=segmentation, max_label=3)
    main(["-i", str(tmp_path / "repo"), "-o", str(tmp_path / "raw")])
    out = tmp_path / "raw" / folder_name
    data = read_dataset_json(out)
    assert data["labels"] == {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}
    assert data["regions_class_order"] == [1, 3, 2]
    assert data["label_names"] == {"1": "kidney", "2": "tumor", "3": "cyst"}
    assert data["numTraining"] == 2 and not (out / "imagesTs").exists()
    assert load_dataset_json(out).label_set.region_based
    original, _ = read_image(tmp_path / "repo" / layout / "case_00001" / segmentation)
    converted, _ = read_image(out / "labelsTr" / "case_00001.nii.gz")
    np.testing.assert_array_equal(original, converted)


def test_kits_copy_symlink_id_and_case_folder_input(tmp_path):
    make_kits(tmp_path / "dataset", num_labelled=2)
    kits.main_kits23(["-i", str(tmp_path / "dataset"), "-o", str(tmp_path / "raw"), "--symlink",
                      "-d", "221", "--name", "Kidney", "-np", "2"])
    linked = tmp_path / "raw" / "Dataset221_Kidney" / "imagesTr" / "case_00000_0000.nii.gz"
    assert linked.is_symlink() and linked.resolve() == (tmp_path / "dataset" / "case_00000" / "imaging.nii.gz").resolve()
    kits.main_kits23(["-i", str(tmp_path / "dataset"), "-o", str(tmp_path / "raw"), "--copy"])
    copied = tmp_path / "raw" / "Dataset220_KiTS2023" / "labelsTr" / "case_00000.nii.gz"
    assert not copied.is_symlink() and os.stat(copied).st_nlink == 1


def test_kits_errors_write_nothing(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_kits(tmp_path / "kits23" / "dataset", num_labelled=3)
    (tmp_path / "kits23" / "dataset" / "case_00001" / "imaging.nii.gz").unlink()
    with pytest.raises(SystemExit) as exit_info:
        kits.main_kits23(["-i", str(tmp_path / "kits23"), "-o", str(raw)])
    assert exit_info.value.code != 0 and "case_00001" in str(exit_info.value.code)
    assert "imaging.nii.gz" in str(exit_info.value.code) and not raw.exists()
    for arguments in (["-i", str(tmp_path / "missing")], ["-i", str(tmp_path / "raw_empty_input")]):
        (tmp_path / "raw_empty_input").mkdir(exist_ok=True)
        with pytest.raises(SystemExit, match="error: folder"):
            kits.main_kits23(arguments + ["-o", str(raw)])
    assert not raw.exists()


def test_kits_refuses_non_empty_output_unless_overwrite(tmp_path):
    make_kits(tmp_path / "data", num_labelled=2)
    out = tmp_path / "raw" / "Dataset064_KiTS19"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    with pytest.raises(SystemExit, match="not empty"):
        kits.main_kits19(["-i", str(tmp_path / "data"), "-o", str(tmp_path / "raw")])
    kits.main_kits19(["-i", str(tmp_path / "data"), "-o", str(tmp_path / "raw"), "--overwrite"])
    assert not (out / "stale.txt").exists() and (out / "dataset.json").is_file()
    with pytest.raises(SystemExit, match="already used"):
        kits.main_kits19(["-i", str(tmp_path / "data"), "-o", str(tmp_path / "raw"), "--name", "Other"])


def make_msd_task(folder):
    spacing, origin = (0.9, 0.8, 2.5, 1.0), (10.0, -20.0, 30.0, 0.0)
    rotation = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)
    direction = np.eye(4)
    direction[:3, :3] = rotation
    rng = np.random.default_rng(1)
    images = {}
    for case_id, subfolder in (("BRATS_001", "imagesTr"), ("BRATS_002", "imagesTr"), ("BRATS_100", "imagesTs")):
        array = rng.normal(size=(2,) + SHAPE).astype(np.float32)
        image = sitk.GetImageFromArray(array, isVector=False)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction.ravel().tolist())
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / subfolder / f"{case_id}.nii.gz"))
        images[case_id] = array
        if subfolder == "imagesTr":
            write_volume(rng.integers(0, 3, SHAPE).astype(np.uint8), folder / "labelsTr" / f"{case_id}.nii.gz")
    (folder / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS junk")
    (folder / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"}, "numTraining": 2,
        "training": [{"image": f"./imagesTr/BRATS_00{i}.nii.gz", "label": f"./labelsTr/BRATS_00{i}.nii.gz"}
                     for i in (1, 2)], "test": ["./imagesTs/BRATS_100.nii.gz"]}))
    return images, spacing, origin, rotation


def test_msd_splits_4d_images_into_channels(tmp_path):
    task = tmp_path / "Task01_BrainTumour"
    images, spacing, origin, rotation = make_msd_task(task)
    msd.main(["-i", str(task), "-o", str(tmp_path / "raw"), "-np", "2"])
    out = tmp_path / "raw" / "Dataset001_BrainTumour"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "BRATS_001_0000.nii.gz", "BRATS_001_0001.nii.gz", "BRATS_002_0000.nii.gz", "BRATS_002_0001.nii.gz"]
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["BRATS_100_0000.nii.gz", "BRATS_100_0001.nii.gz"]
    data = read_dataset_json(out)
    assert data["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert data["labels"] == {"background": 0, "edema": 1, "tumour": 2}
    assert data["numTraining"] == 2 and data["file_ending"] == ".nii.gz"
    for channel in (0, 1):
        written = sitk.ReadImage(str(out / "imagesTs" / f"BRATS_100_{channel:04d}.nii.gz"))
        assert written.GetDimension() == 3
        np.testing.assert_allclose(written.GetSpacing(), spacing[:3], rtol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), origin[:3], rtol=1e-6)
        np.testing.assert_allclose(np.reshape(written.GetDirection(), (3, 3)), rotation, atol=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), images["BRATS_100"][channel])
    label_source = task / "labelsTr" / "BRATS_002.nii.gz"
    assert (out / "labelsTr" / "BRATS_002.nii.gz").read_bytes() == label_source.read_bytes()


def test_msd_missing_label_names_case(tmp_path):
    task = tmp_path / "Task01_BrainTumour"
    make_msd_task(task)
    (task / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(SystemExit, match="BRATS_002"):
        msd.main(["-i", str(task), "-o", str(tmp_path / "raw")])
    assert not (tmp_path / "raw").exists()


def test_msd_truncated_4d_image_names_the_file(tmp_path):
    task = tmp_path / "Task01_BrainTumour"
    make_msd_task(task)
    path = task / "imagesTr" / "BRATS_002.nii.gz"
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(SystemExit, match="BRATS_002.nii.gz: is truncated"):
        msd.main(["-i", str(task), "-o", str(tmp_path / "raw")])
    assert not (tmp_path / "raw").exists()


def make_box_dataset(raw):
    folder = raw / "Dataset005_Boxes"
    label_map = np.zeros(SHAPE, dtype=np.uint8)
    label_map[1:3, 2:4, 3:6] = 2
    label_map[5:8, 7:10, 9:12] = 2
    label_map[4, 0:10, 0:2] = 1
    for case_id in ("a", "b"):
        write_volume(np.zeros(SHAPE, dtype=np.int16), folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        write_volume(label_map if case_id == "a" else np.zeros(SHAPE, np.uint8), folder / "labelsTr" / f"{case_id}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 2, "file_ending": ".nii.gz", "description": "kept"}))
    return folder, label_map


def test_labels_to_boxes_margin_zero_and_merge(tmp_path):
    folder, _ = make_box_dataset(tmp_path)
    write_boxes([Box(1, (0, 0, 0), (2, 2, 2)), Box(2, (0, 0, 0), (1, 1, 1))], folder / "boxesTr" / "a.json")
    report = labels_to_boxes.labels_to_boxes(folder, [2], margin=0)
    assert read_boxes(folder / "boxesTr" / "a.json") == [
        Box(1, (0, 0, 0), (2, 2, 2)), Box(2, (1, 2, 3), (3, 4, 6)), Box(2, (5, 7, 9), (8, 10, 12))]
    assert read_boxes(folder / "boxesTr" / "b.json") == []
    assert report == {"cases": 2, "boxes_per_label": {2: 2}, "mean_box_size": {2: [2.5, 2.5, 3.0]}}
    data = read_dataset_json(folder)
    assert data["box_labels"] == [2] and data["description"] == "kept" and data["box_margins"] == {"2": 0}


def test_labels_to_boxes_cli_margin_and_drop_label(tmp_path, monkeypatch):
    folder, label_map = make_box_dataset(tmp_path)
    monkeypatch.setenv("boxunet_raw", str(tmp_path))
    arguments = ["-d", "5", "--label", "2", "--margin", "2", "--drop-label"]
    labels_to_boxes.main(arguments)
    assert read_boxes(folder / "boxesTr" / "a.json") == [Box(2, (0, 0, 1), (5, 6, 8)), Box(2, (3, 5, 7), (8, 10, 12))]
    dense, _ = read_image(folder / "labelsTr_dense" / "a.nii.gz")
    np.testing.assert_array_equal(dense, label_map)
    dropped, _ = read_image(folder / "labelsTr" / "a.nii.gz")
    np.testing.assert_array_equal(dropped, np.where(label_map == 2, 0, label_map))
    assert read_dataset_json(folder)["dropped_labels"] == [2]
    labels_to_boxes.main(arguments)  # rerun: boxes still come from the dense copy
    assert len(read_boxes(folder / "boxesTr" / "a.json")) == 2


def test_labels_to_boxes_errors(tmp_path):
    folder, _ = make_box_dataset(tmp_path)
    with pytest.raises(BoxunetError, match="not among the declared"):
        labels_to_boxes.labels_to_boxes(folder, [7], margin=0)
    with pytest.raises(BoxunetError, match="margin"):
        labels_to_boxes.labels_to_boxes(folder, [2], margin=-1)
    (folder / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(BoxunetError, match="case b"):
        labels_to_boxes.labels_to_boxes(folder, [2], margin=0, drop_label=True)
    assert not (folder / "boxesTr").exists() and not (folder / "labelsTr_dense").exists()
    (folder / "labelsTr_dense").mkdir()
    with pytest.raises(BoxunetError, match="labelsTr_dense"):
        labels_to_boxes.labels_to_boxes(folder, [2], margin=0, drop_label=True)


def _nnunet_folder(root, num_cases: int = 6):
    """An nnU-Net v2 raw layout without dataset.json: 3D MRI crops, some stored as uint8 and some as float32."""
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    rng = np.random.default_rng(3)
    for index in range(num_cases):
        dtype = np.uint8 if index % 3 == 0 else np.float32
        image = sitk.GetImageFromArray((rng.random((6, 8, 7)) * 200).astype(dtype))
        label = np.zeros((6, 8, 7), np.uint8)
        label[2:4, 2:5, 1:3], label[2:4, 5:7, 3:6] = 1, 2
        sitk.WriteImage(image, str(images / f"hippocampus_{index:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(labels / f"hippocampus_{index:03d}.nii.gz"))
    return root


def test_nnunet_layout_without_dataset_json_and_a_held_out_test_split(tmp_path, capsys):
    source = _nnunet_folder(tmp_path / "hippocampus")
    arguments = ["-i", str(source), "-o", str(tmp_path / "raw"), "-d", "4", "--name", "Hippocampus"]
    with pytest.raises(SystemExit, match="give --channel-names"):
        nnunet.main(arguments)
    with pytest.raises(SystemExit, match="--num-test 6: give 0 up to 5"):
        nnunet.main(arguments + ["--channel-names", "MRI", "--labels", "background", "anterior", "posterior",
                                 "--num-test", "6"])
    assert not (tmp_path / "raw").exists(), "nothing written before the checks pass"
    nnunet.main(arguments + ["--channel-names", "MRI", "--labels", "background", "anterior", "posterior",
                             "--num-test", "2"])
    folder = tmp_path / "raw" / "Dataset004_Hippocampus"
    description = load_dataset_json(folder)
    assert description.labels == {"background": 0, "anterior": 1, "posterior": 2} and description.num_training == 4
    assert description.channel_names == {0: "MRI"}
    test_ids = sorted(p.name[:-12] for p in (folder / "imagesTs").glob("*_0000.nii.gz"))
    assert test_ids == nnunet.held_out_cases([f"hippocampus_{i:03d}" for i in range(6)], 2) and len(test_ids) == 2
    assert sorted(p.name[:-7] for p in (folder / "labelsTs").glob("*.nii.gz")) == test_ids
    assert len(list((folder / "imagesTr").glob("*.nii.gz"))) == len(list((folder / "labelsTr").glob("*.nii.gz"))) == 4
    copies = list(folder.glob("images*/*.nii.gz"))
    for copied in copies:  # stored bytes are kept: uint8 images stay uint8
        assert copied.read_bytes() == (source / "imagesTr" / copied.name).read_bytes()
    assert {sitk.ReadImage(str(p)).GetPixelIDTypeAsString() for p in copies} == {"8-bit unsigned integer",
                                                                                "32-bit float"}
    # a folder with its own dataset.json takes no label arguments
    (source / "dataset.json").write_text(json.dumps(load_dataset_json(folder).to_json() | {"numTraining": 6}))
    with pytest.raises(SystemExit, match="has a dataset.json; --channel-names and --labels are only for"):
        nnunet.main(["-i", str(source), "-o", str(tmp_path / "raw2"), "-d", "5", "--name", "H",
                     "--labels", "background", "a", "p"])
    nnunet.main(["-i", str(source), "-o", str(tmp_path / "raw2"), "-d", "5", "--name", "H"])
    assert load_dataset_json(tmp_path / "raw2" / "Dataset005_H").num_training == 6
