"""Shared fixtures: tiny generated datasets and isolated boxunet roots."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from boxunet.io.boxes import boxes_from_label_map, write_boxes
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.io.images import Geometry, write_image
from boxunet.io.model_folder import write_model_files
from boxunet.paths import preprocessed_root
from boxunet.plan_and_preprocess import PlanAndPreprocessOptions, plan_and_preprocess
from boxunet.planning.planner import DEFAULT_PLANS_NAME, plans_file
from boxunet.planning.plans import load_plans, save_plans
from boxunet.planning.topology import features_per_stage
from boxunet.training.trainer import Trainer


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end training (deselect with -m 'not slow')")


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Point the three boxunet roots at a temporary folder."""
    paths = {kind: tmp_path / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in paths.items():
        monkeypatch.setenv(f"boxunet_{kind}", str(path))
    return paths


def install_trainers(site: Path, distribution: str, trainers: dict[str, str], monkeypatch) -> None:
    """Make ``site`` (put on sys.path) hold the metadata of an installed package ``distribution`` whose
    ``boxunet.trainers`` entry points declare ``trainers`` (name -> "module:Class"), as its setup.py would."""
    metadata = site / f"{distribution}-0.1.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (metadata / "entry_points.txt").write_text("[boxunet.trainers]\n" + "".join(f"{name} = {target}\n"
                                                                              for name, target in trainers.items()))
    monkeypatch.syspath_prepend(str(site))


def make_case_arrays(seed: int, shape=(12, 40, 36)):
    """A small CT-like volume with a body, a kidney (1) and a tumor (2) touching it."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    center = np.array(shape) / 2
    body = ((y - center[1]) / (shape[1] * 0.42)) ** 2 + ((x - center[2]) / (shape[2] * 0.42)) ** 2 < 1
    image = np.where(body, 40.0, -1000.0)
    kidney_center = center + np.array([0, rng.integers(-3, 3), rng.integers(-6, -2)])
    kidney = ((z - kidney_center[0]) / 4.5) ** 2 + ((y - kidney_center[1]) / 6) ** 2 + ((x - kidney_center[2]) / 4) ** 2 < 1
    tumor_center = kidney_center + np.array([1, 2, 5])
    tumor = ((z - tumor_center[0]) / 2.5) ** 2 + ((y - tumor_center[1]) / 3) ** 2 + ((x - tumor_center[2]) / 3) ** 2 < 1
    label = np.zeros(shape, np.uint8)
    label[kidney] = 1
    label[tumor] = 2
    image[kidney] = 180
    image[tumor] = 90
    image = image + rng.normal(0, 10, shape)
    return image.astype(np.int16), label


def write_tiny_dataset(raw_root: Path, dataset_id: int = 1, num_cases: int = 4, with_boxes: bool = True,
                       file_ending: str = ".nii.gz", spacings=None, shape=(12, 40, 36)) -> Path:
    """Write a tiny KiTS-like dataset (kidney labels, tumor labels and tumor boxes) and return its folder."""
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_Tiny"
    for sub in ("imagesTr", "labelsTr", "boxesTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    spacings = spacings or [(3.0 + 0.5 * (i % 3), 0.8 + 0.05 * i, 0.8 + 0.05 * i) for i in range(num_cases)]
    for index in range(num_cases):
        image, label = make_case_arrays(index, shape)
        geometry = Geometry(spacings[index], (10.0 * index, -5.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), shape)
        case_id = f"case_{index:03d}"
        write_image(image, geometry, folder / "imagesTr" / f"{case_id}_0000{file_ending}")
        write_image(label, geometry, folder / "labelsTr" / f"{case_id}{file_ending}")
        if with_boxes:
            write_boxes(boxes_from_label_map(label, 2), folder / "boxesTr" / f"{case_id}.json")
    description = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2},
                   "numTraining": num_cases, "file_ending": file_ending}
    if with_boxes:
        description["box_labels"] = [2]
    (folder / "dataset.json").write_text(json.dumps(description, indent=2))
    return folder


@pytest.fixture
def tiny_dataset(roots):
    """A 4-case tiny box dataset in the temporary raw root."""
    return write_tiny_dataset(roots["raw"])


def plan_tiny_3d_fullres(dataset: str = "1") -> None:
    """Plan and preprocess 3d_fullres of a tiny dataset (small memory budget, one process, quiet), then narrow
    its network (``narrow_networks``)."""
    plan_and_preprocess(dataset, PlanAndPreprocessOptions(configurations=["3d_fullres"], gpu_memory_gb=0.25,
                                                          num_processes=1, progress=False))
    narrow_networks(dataset)


def narrow_networks(dataset: str = "1", base: int = 8) -> None:
    """Give every planned network of the tiny ``dataset`` ``base`` features in its first stage (doubling per stage,
    as the planner's ``features_per_stage``), as a user editing the plans would: the tests' trainings then cost a
    sixteenth of the planned 32-feature networks' convolutions (the planner itself is tested in test_planning.py)."""
    path = plans_file(find_dataset_folder(dataset, preprocessed_root()), DEFAULT_PLANS_NAME)
    plans = load_plans(path)
    for name, configuration in plans.configurations.items():
        architecture = configuration.architecture
        features = features_per_stage(architecture.n_stages, architecture.conv_dim, base)
        plans.configurations[name] = replace(configuration, architecture=replace(architecture,
                                                                                 features_per_stage=features))
    save_plans(plans, path)


@pytest.fixture
def dense_tiny(roots):
    """A 6-case tiny dataset with dense kidney and tumor labels (no boxes), preprocessed for 3d_fullres."""
    write_tiny_dataset(roots["raw"], num_cases=6, with_boxes=False, shape=(16, 48, 40))
    plan_tiny_3d_fullres()
    return roots


def two_intensity_volume(seed=0, shape=(20, 40, 40), spacing=(2.0, 1.0, 1.0)):
    """An ellipsoid of intensity 1 in a background of 0 with noise (sigma 0.15); its tight box."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    inner = ((z - 20) / 12) ** 2 + ((y - 20) / 11) ** 2 + ((x - 19) / 9) ** 2 < 1
    image = inner + np.random.default_rng(seed).normal(0, 0.15, shape)
    return image[None].astype(np.float32), inner, spacing


ODD_GEOMETRY = Geometry((2.7, 0.9, 1.1), (12.5, -30.25, 7.0), (0, 1, 0, 1, 0, 0, 0, 0, -1), (11, 37, 29))


def random_unet_model(roots, num_folds: int = 2):
    """A Trainer model folder of the tiny dense dataset whose folds are He-initialized U-Nets (seeded): every
    voxel's label depends on the image and the folds' weights, as with a trained model."""
    dataset = write_tiny_dataset(roots["raw"], num_cases=4, with_boxes=False)
    plan_tiny_3d_fullres()
    plans = load_plans(roots["preprocessed"] / "Dataset001_Tiny" / "boxunet_plans.json")
    configuration = plans.configuration("3d_fullres")
    folder = roots["results"] / "Dataset001_Tiny" / "Trainer__boxunetPlans__3d_fullres"
    write_model_files(folder, plans.to_json(), dataset / "dataset.json")
    for fold in range(num_folds):
        torch.manual_seed(fold)
        network = Trainer.build_network(plans, configuration, 3, {})
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": network.state_dict(), "optimizer_state": {}, "current_epoch": 1,
                    "trainer_name": "Trainer", "options": {}, "configuration": "3d_fullres", "num_outputs": 3,
                    "inference_allowed_mirroring_axes": [0, 1, 2]}, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def odd_input_image(folder, case_id: str, seed: int = 7):
    """Write a tiny CT-like input image with ``ODD_GEOMETRY`` (permuted, flipped, odd spacing) and return its path."""
    image, _ = make_case_arrays(seed, ODD_GEOMETRY.shape)
    folder.mkdir(parents=True, exist_ok=True)
    write_image(image, ODD_GEOMETRY, folder / f"{case_id}_0000.nii.gz")
    return folder / f"{case_id}_0000.nii.gz"
