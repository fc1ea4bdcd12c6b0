"""End to end: boxunet_plan_and_preprocess on a tiny generated dataset, through the command line."""
import json

import numpy as np
import pytest

from boxunet.cli.plan_and_preprocess import main
from boxunet.io.images import Geometry, write_image
from boxunet.planning.plans import load_plans, save_plans
from boxunet.preprocessing.storage import load_case
from conftest import write_tiny_dataset


def preprocessed(roots):
    return roots["preprocessed"] / "Dataset001_Tiny"


def test_plan_and_preprocess_end_to_end(tiny_dataset, roots, capsys):
    main(["-d", "1", "--gpu-memory-gb", "1", "-np", "2", "--quiet"])
    folder = preprocessed(roots)
    fingerprint = json.loads((folder / "dataset_fingerprint.json").read_text())
    assert fingerprint["case_ids"] == ["case_000", "case_001", "case_002", "case_003"]
    assert fingerprint["shapes_before_crop"][0] == [12, 40, 36]
    assert fingerprint["spacings"][1] == pytest.approx([3.5, 0.85, 0.85])
    assert fingerprint["box_statistics"]["2"]["box_count"] == 4
    assert set(fingerprint["class_volume_ml"]) == {"1", "2"}

    plans = load_plans(folder / "boxunet_plans.json")
    fullres = plans.configurations["3d_fullres"]
    # median spacing of (3.0, 3.5, 4.0, 3.0) x (0.8, 0.85, 0.9, 0.95)
    assert fullres.spacing == pytest.approx([3.25, 0.875, 0.875])
    assert plans.transpose_forward == [0, 1, 2]
    assert plans.box_labels == [2]
    assert plans.normalization[0].scheme == "ct"
    assert set(plans.configurations) == {"2d", "3d_fullres"}

    data, seg, properties = load_case(folder / fullres.data_identifier, "case_001")
    # case_001: spacing (3.5, 0.85, 0.85), shape (12, 40, 36) -> round(12*3.5/3.25), round(40*0.85/0.875), ...
    assert data.shape == (1, 13, 39, 35) and seg.shape == (1, 13, 39, 35)
    assert data.dtype == np.float32 and seg.dtype == np.int8
    labels = set(np.unique(seg[:]).tolist())
    assert labels == {0, 1}, "the box label 2 must not be in the training seg"
    assert properties["spacing"] == pytest.approx([3.25, 0.875, 0.875])
    assert properties["geometry"]["spacing"] == pytest.approx([3.5, 0.85, 0.85])
    assert properties["geometry"]["origin"] == pytest.approx([10.0, -5.0, 3.0])
    assert len(properties["boxes"]) == 1 and properties["boxes"][0]["label"] == 2
    box = properties["boxes"][0]
    inside = np.zeros(seg.shape[1:], bool)
    inside[tuple(slice(lo, hi) for lo, hi in zip(box["min"], box["max"]))] = True
    assert all(inside[tuple(p)] for p in properties["class_locations"]["2"])
    assert all(seg[0][tuple(p)] == 1 for p in properties["class_locations"]["1"][:50])

    data_2d, seg_2d, properties_2d = load_case(folder / plans.configurations["2d"].data_identifier, "case_001")
    assert data_2d.shape == (1, 12, 39, 35), "2d keeps the slice count and resamples in-plane"
    assert properties_2d["spacing"] == pytest.approx([3.5, 0.875, 0.875])
    assert sorted(p.name for p in (folder / "gt_segmentations").iterdir()) == [
        f"case_00{i}.nii.gz" for i in range(4)]


def test_resume_skips_finished_cases_and_redoes_missing(tiny_dataset, roots, capsys):
    main(["-d", "1", "--gpu-memory-gb", "1", "-np", "1", "--quiet", "-c", "3d_fullres"])
    case_folder = preprocessed(roots) / "boxunetPlans_3d_fullres"
    (case_folder / "case_002.json").unlink()  # as if interrupted before the properties were written
    before = (case_folder / "case_000.b2nd").stat().st_mtime_ns
    from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
    report = plan_and_preprocess("1", PlanAndPreprocessOptions(configurations=["3d_fullres"], gpu_memory_gb=1,
                                                               num_processes=1, progress=False))
    assert report["preprocessing"]["boxunetPlans_3d_fullres"] == {"processed": 1, "skipped": 3}
    assert (case_folder / "case_000.b2nd").stat().st_mtime_ns == before
    assert (case_folder / "case_002.json").is_file()


def test_replanning_keeps_custom_configurations(tiny_dataset, roots):
    main(["-d", "Dataset001_Tiny", "--gpu-memory-gb", "1", "--no-preprocess", "--quiet"])
    plans_file = preprocessed(roots) / "boxunet_plans.json"
    plans = load_plans(plans_file)
    custom = plans.configurations["3d_fullres"]
    custom.name = "3d_fullres_bigbatch"
    custom.batch_size = 8
    plans.configurations[custom.name] = custom
    save_plans(plans, plans_file)
    main(["-d", "1", "--gpu-memory-gb", "1", "--no-preprocess", "--quiet"])
    assert load_plans(plans_file).configurations["3d_fullres_bigbatch"].batch_size == 8


def test_ct_window_and_transposed_anisotropic_axis(roots):
    """Slice axis last in the array (as in KiTS NIfTI files) is moved first; the CT window scales to [0, 1]."""
    spacings = [(0.8, 0.8, 4.0), (0.85, 0.85, 4.5), (0.9, 0.9, 3.0)]
    folder = write_tiny_dataset(roots["raw"], num_cases=3, spacings=spacings, shape=(40, 36, 10),
                                file_ending=".nrrd")
    flipped = folder / "imagesTr" / "case_001_0000.nrrd"
    from boxunet.io.images import read_image
    image, geometry = read_image(flipped)
    label, _ = read_image(folder / "labelsTr" / "case_001.nrrd")
    flipped_geometry = Geometry(**{**geometry.__dict__, "direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1)})
    write_image(image, flipped_geometry, flipped)
    write_image(label, flipped_geometry, folder / "labelsTr" / "case_001.nrrd")
    main(["-d", "1", "--gpu-memory-gb", "1", "--ct-window", "-200", "500", "--quiet", "-c", "3d_fullres"])
    plans = load_plans(preprocessed(roots) / "boxunet_plans.json")
    assert plans.transpose_forward == [2, 0, 1] and plans.transpose_backward == [1, 2, 0]
    # anisotropic (4.0 > 3 x 0.85) with few slices (10 x 3 < 36): 10th percentile of (3.0, 4.0, 4.5)
    assert plans.configurations["3d_fullres"].spacing == pytest.approx([3.2, 0.85, 0.85])
    data, _, properties = load_case(preprocessed(roots) / "boxunetPlans_3d_fullres", "case_001")
    assert properties["geometry"]["direction"] == [-1, 0, 0, 0, -1, 0, 0, 0, 1]
    assert properties["shape_before_cropping"] == [10, 40, 36]
    values = data[:]
    assert values.min() >= -0.05 and values.max() <= 1.05
    # air (-1000 HU) is clipped to the window's low end, 0 after scaling; soft tissue (40 HU) -> 240 / 700
    assert np.mean(np.abs(values) < 1e-3) > 0.1
    assert np.mean(np.abs(values - 240 / 700) < 0.05) > 0.1
