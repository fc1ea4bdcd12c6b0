"""The synthetic KiTS-like demo dataset: layout, geometry, labels, boxes, determinism, CLI refusals."""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from boxunet.errors import BoxunetError
from boxunet.io.boxes import read_boxes
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.images import read_geometry, read_image
from boxunet.io.verification import verify_headers
from dataset_conversion.generate_demo import generate_demo_dataset, main
from dataset_conversion.phantom import generate_case, sample_geometry

SCALE = 0.3
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED_SEED = 1  # direction diag(-1, -1, 1); see test_flipped_seed_is_flipped


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw") / "Dataset900_KiTSDemo"
    return generate_demo_dataset(folder, 3, seed=0, size_scale=SCALE, num_test=1, num_processes=2)


def cases(folder):
    for index in range(3):
        case_id = f"case_{index:05d}"
        image, geometry = read_image(folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        label, label_geometry = read_image(folder / "labelsTr" / f"{case_id}.nii.gz")
        yield index, case_id, image, geometry, label, label_geometry


def physical_point(geometry, index_zyx):
    image = sitk.Image([int(n) for n in geometry.shape[::-1]], sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing[::-1])
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index_zyx[::-1]]))


def test_dataset_json(dataset):
    assert load_dataset_json(dataset).to_json() == {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "box_labels": [2],
        "name": "Dataset900_KiTSDemo",
        "description": "Synthetic KiTS-like abdominal CT phantoms (kidney, tumor, cyst); tumors given as boxes, "
                       "their dense labels kept in labelsTr for evaluation",
        "reference": "synthetic",
    }


def test_layout_passes_verification(dataset):
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [f"case_0000{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [f"case_0000{i}.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (dataset / "boxesTr").iterdir()) == [f"case_0000{i}.json" for i in range(3)]
    assert [p.name for p in (dataset / "imagesTs").iterdir()] == ["case_00003_0000.nii.gz"]
    assert [p.name for p in (dataset / "labelsTs").iterdir()] == ["case_00003.nii.gz"]
    assert len(verify_headers(dataset, load_dataset_json(dataset))) == 3


def test_images_and_labels(dataset):
    for _, case_id, image, geometry, label, label_geometry in cases(dataset):
        assert geometry.mismatch(label_geometry) is None, case_id
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
        assert (label == 1).any() and (label == 2).any(), case_id
        assert image.min() == -1024 and image[0, 0, 0] < -900  # air around the body
        assert 60 <= np.median(image[label == 1]) <= 180, case_id  # 120-150 at full size, partial volume here
        assert 10 <= np.median(image[label == 2]) <= 130, case_id


def test_written_cases_equal_generate_case(dataset):
    for index, case_id, image, geometry, label, _ in cases(dataset):
        expected_image, expected_label, expected_geometry = generate_case(index, SCALE)
        assert np.array_equal(image, expected_image) and np.array_equal(label, expected_label), case_id
        assert expected_geometry.mismatch(geometry) is None, case_id
    test_image, _ = read_image(dataset / "imagesTs" / "case_00003_0000.nii.gz")
    assert np.array_equal(test_image, generate_case(3, SCALE)[0])


def test_boxes_match_tumor_components(dataset):
    for _, case_id, _, _, label, _ in cases(dataset):
        components, count = ndimage.label(label == 2, structure=np.ones((3, 3, 3)))
        expected = sorted((tuple(s.start for s in found), tuple(s.stop for s in found))
                          for found in ndimage.find_objects(components))
        boxes = read_boxes(dataset / "boxesTr" / f"{case_id}.json")
        assert count >= 1 and len(boxes) == count, case_id
        assert all(box.label == 2 for box in boxes)
        assert sorted((box.min, box.max) for box in boxes) == expected, case_id


def test_deterministic_and_seed_dependent():
    first, second, other = generate_case(7, 0.25), generate_case(7, 0.25), generate_case(8, 0.25)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])


def test_geometry_ranges_and_size_scale():
    for seed in range(20):
        full, small = sample_geometry(seed, 1.0), sample_geometry(seed, 0.25)
        assert 170 <= full.shape[1] <= 210 and 170 <= full.shape[2] <= 210
        assert 1.5 <= full.spacing[1] == full.spacing[2] <= 2.2 and full.spacing[0] in (2.5, 3.0, 3.75, 4.0, 5.0)
        assert 197.5 <= full.shape[0] * full.spacing[0] <= 322.5
        assert np.allclose(np.multiply(full.shape, full.spacing), np.multiply(small.shape, small.spacing), rtol=0.05)
        assert min(small.shape) >= 10
    with pytest.raises(ValueError):
        sample_geometry(0, 0.2)


def test_no_cysts_changes_only_cysts():
    seed = 2  # a case with a cyst
    with_cysts, without = generate_case(seed, 0.25)[1], generate_case(seed, 0.25, cysts=False)[1]
    assert (with_cysts == 3).any() and not (without == 3).any()
    assert np.array_equal(with_cysts[with_cysts != 3], without[with_cysts != 3])


def test_flipped_seed_is_flipped():
    assert sample_geometry(FLIPPED_SEED, SCALE).direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    assert sample_geometry(0, SCALE).direction == IDENTITY


def test_flipped_direction_kept_on_disk_with_same_anatomy(tmp_path):
    folder = generate_demo_dataset(tmp_path / "Dataset900_KiTSDemo", 1, seed=FLIPPED_SEED, size_scale=SCALE,
                                   file_ending=".nrrd", num_processes=1)
    image, geometry = read_image(folder / "imagesTr" / "case_00000_0000.nrrd")
    label, label_geometry = read_image(folder / "labelsTr" / "case_00000.nrrd")
    assert geometry.direction == label_geometry.direction == sample_geometry(FLIPPED_SEED, SCALE).direction
    # the anatomy lies the right way round in physical (LPS) space: left kidney (larger x) higher, spine posterior
    components, _ = ndimage.label(label == 1, structure=np.ones((3, 3, 3)))
    kidneys = sorted((physical_point(geometry, ndimage.center_of_mass(components == k)) for k in (1, 2)),
                     key=lambda point: point[0])
    assert kidneys[1][2] - kidneys[0][2] > 10
    spine = physical_point(geometry, ndimage.center_of_mass(image > 400))
    centre = physical_point(geometry, [(n - 1) / 2 for n in geometry.shape])
    assert spine[1] - centre[1] > 20


def test_crop_keeps_every_label_at_its_physical_position(tmp_path):
    image, label, geometry = generate_case(FLIPPED_SEED, SCALE)
    folder = generate_demo_dataset(tmp_path / "Dataset900_KiTSDemo", 1, seed=FLIPPED_SEED, size_scale=SCALE,
                                   num_processes=1, crop_margin=10.0)
    cropped, cropped_geometry = read_image(folder / "labelsTr" / "case_00000.nii.gz")
    for value in (1, 2, 3):  # every kidney, tumor and cyst voxel is kept
        assert np.count_nonzero(cropped == value) == np.count_nonzero(label == value)
    # the labelled box plus ceil(10 mm / spacing) voxels per side (the flipped axes too)
    where = np.argwhere(label > 0)
    margin = np.ceil(10.0 / np.asarray(geometry.spacing)).astype(int)
    low = np.maximum(where.min(0) - margin, 0)
    assert cropped_geometry.shape == tuple(np.minimum(where.max(0) + 1 + margin, label.shape) - low)
    assert cropped_geometry.shape < geometry.shape
    tumor = np.argwhere(cropped == 2)[0]
    assert label[tuple(tumor + low)] == 2
    np.testing.assert_allclose(physical_point(cropped_geometry, tumor), physical_point(geometry, tumor + low),
                               atol=1e-4)
    with pytest.raises(BoxunetError, match="crop margin"):
        generate_demo_dataset(tmp_path / "Dataset901_KiTSDemo", 1, size_scale=SCALE, num_processes=1, crop_margin=-1)


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    folder = tmp_path / "Dataset900_KiTSDemo"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(BoxunetError, match="not empty"):
        generate_demo_dataset(folder, 1, size_scale=0.25, num_processes=1)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    generate_demo_dataset(folder, 1, size_scale=0.25, num_processes=1, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["boxesTr", "dataset.json", "imagesTr", "labelsTr"]


def test_cli(tmp_path, capsys):
    argv = ["-d", "901", "-n", "2", "--size-scale", "0.25", "-o", str(tmp_path), "-np", "1", "--no-cysts",
            "--file-ending", ".mha", "--seed", "2"]
    main(argv)
    folder = tmp_path / "Dataset901_KiTSDemo"
    assert "wrote 2 training and 0 test cases" in capsys.readouterr().out
    assert load_dataset_json(folder).labels == {"background": 0, "kidney": 1, "tumor": 2}
    label, _ = read_image(folder / "labelsTr" / "case_00000.mha")
    assert not (label == 3).any()
    assert read_geometry(folder / "imagesTr" / "case_00001_0000.mha").shape == sample_geometry(3, 0.25).shape
    with pytest.raises(SystemExit, match="not empty"):
        main(argv)
    with pytest.raises(SystemExit, match="already used"):
        main(["-d", "901", "--name", "Other", "-n", "1", "-o", str(tmp_path)])


def test_dense_variant_has_no_boxes(tmp_path):
    main(["-n", "1", "--size-scale", "0.25", "-o", str(tmp_path), "-np", "1", "--dense"])
    folder = tmp_path / "Dataset901_KiTSDemoDense"
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert load_dataset_json(folder).box_labels == []
    assert (read_image(folder / "labelsTr" / "case_00000.nii.gz")[0] == 2).any(), "the tumor stays in the labels"
