"""Training data pipeline: case loading, patch sampling, oversampling, augmentation and background workers."""
import numpy as np
import pytest
import torch

from boxunet.errors import BoxunetError
from boxunet.planning.plans import ArchitecturePlan, ConfigurationPlan, NormalizationPlan, Plans
from boxunet.preprocessing.storage import save_case
from boxunet.training.data.augmentation import (MaskOutsideTransform, augmentation_parameters, initial_patch_size,
                                                training_transforms, validation_transforms)
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.data.pipeline import default_augmentation_workers, make_batch_iterators
from boxunet.training.data.sampler import PatchSampler

SHAPE = (12, 40, 36)
DS_SCALES_3D = [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Six cases (1, 12, 40, 36): noise data, a 2x2x2 label-1 blob, no label 2."""
    folder = tmp_path_factory.mktemp("preprocessed")
    rng = np.random.default_rng(0)
    ids = [f"case_{i}" for i in range(6)]
    for case_id in ids:
        data = rng.normal(1, 1, (1, *SHAPE)).astype(np.float32)
        seg = np.zeros((1, *SHAPE), np.int8)
        z, y, x = (int(rng.integers(0, s - 1)) for s in SHAPE)
        seg[0, z:z + 2, y:y + 2, x:x + 2] = 1
        locations = np.argwhere(seg[0] == 1).tolist()
        save_case(folder, case_id, data, seg, {"class_locations": {"1": locations, "2": []}}, [8, 32, 32])
    return PreprocessedCases(folder, ids)


def plans_for(patch_size, batch_size=2):
    architecture = ArchitecturePlan(len(patch_size), [4, 8], [[3] * len(patch_size)] * 2,
                                    [[1] * len(patch_size), [2] * len(patch_size)], [1, 1], [1])
    configuration = ConfigurationPlan("c", "c", [1.0] * len(patch_size), list(patch_size), batch_size,
                                      list(SHAPE[-len(patch_size):]), architecture, False)
    plans = Plans("Dataset001_Tiny", "plans", [0, 1, 2], [0, 1, 2], [1.0] * 3, list(SHAPE),
                  [NormalizationPlan("zscore", use_nonzero_mask=True)], {"background": 0, "a": 1}, [], None, 1, 8.0,
                  {"c": configuration}, {})
    return configuration, plans


def test_missing_case_names_case_and_folder(cases):
    with pytest.raises(BoxunetError, match=r"case_9.*boxunet_plan_and_preprocess"):
        PreprocessedCases(cases.folder, ["case_0", "case_9"])


@pytest.mark.parametrize("patch", [(8, 32, 32), (32, 32)])
def test_batch_shapes(cases, patch):
    batch = PatchSampler(cases, 3, patch, seed=1).generate_train_batch()
    assert batch["data"].shape == (3, 1, *patch) and batch["data"].dtype == np.float32
    assert batch["seg"].shape == (3, 1, *patch) and batch["seg"].dtype == np.int8
    assert len(batch["keys"]) == 3 and set(batch["keys"]) <= set(cases.case_ids)


def test_patch_larger_than_image_is_padded(cases):
    batch = PatchSampler(cases, 2, (16, 48, 48), seed=0).generate_train_batch()
    for data, seg, case_id in zip(batch["data"], batch["seg"], batch["keys"]):
        stored_data, stored_seg, _ = cases.load(case_id)
        inside = (slice(None), slice(2, 14), slice(4, 44), slice(6, 42))  # the image is centred
        np.testing.assert_array_equal(data[inside], stored_data[:])
        np.testing.assert_array_equal(seg[inside], stored_seg[:])
        outside = np.ones(seg.shape, bool)
        outside[inside] = False
        assert np.all(data[outside] == 0) and np.all(seg[outside] == -1)


def test_last_sample_of_each_batch_is_forced_foreground(cases):
    sampler = PatchSampler(cases, 3, (4, 8, 8), oversample_foreground_percent=0.33, seed=3)
    hits = np.array([[np.any(s == 1) for s in sampler.generate_train_batch()["seg"]] for _ in range(60)])
    assert hits[:, 2].all()
    assert hits[:, :2].mean() < 0.15
    assert hits.mean() >= 1 / 3
    always = PatchSampler(cases, 3, (4, 8, 8), oversample_foreground_percent=1.0, probabilistic_oversampling=True)
    assert all(np.any(s == 1) for s in always.generate_train_batch()["seg"])


def test_2d_foreground_sample_uses_the_slice_of_the_location(cases):
    batch = PatchSampler(cases, 2, (16, 16), oversample_foreground_percent=1.0, seed=2).generate_train_batch()
    assert all(np.any(seg == 1) for seg in batch["seg"])


def test_sampler_is_seeded_per_worker(cases):
    first, second, other = (PatchSampler(cases, 3, (8, 16, 16), seed=7) for _ in range(3))
    other.set_thread_id(1)
    a, b, c = first.generate_train_batch(), second.generate_train_batch(), other.generate_train_batch()
    np.testing.assert_array_equal(a["data"], b["data"])
    assert a["keys"] == b["keys"]
    assert not np.array_equal(a["data"], c["data"])


def test_initial_patch_size():
    parameters = augmentation_parameters((8, 32, 32))
    assert parameters["dummy_2d"] and parameters["mirror_axes"] == (0, 1, 2)
    assert parameters["initial_patch_size"] == (8, 54, 54)  # 32 * sqrt(2) / 0.85 = 53.2, even margin
    assert not augmentation_parameters((16, 32, 32))["dummy_2d"]
    # rotations of +-30 degrees of a cube: 32 * (cos 30 + sin 30) / 0.85 = 51.4
    assert augmentation_parameters((32, 32, 32))["initial_patch_size"] == (52, 52, 52)
    assert initial_patch_size((32, 32), [(0.0, 0.0)] * 3) == (38, 38)
    assert augmentation_parameters((32, 64))["rotation"][0] == pytest.approx((-np.pi / 12, np.pi / 12))


def test_training_transforms_output_deep_supervision_targets(cases):
    patch = (8, 32, 32)
    parameters = augmentation_parameters(patch)
    sampler = PatchSampler(cases, 2, parameters["initial_patch_size"], patch, seed=0)
    transforms = training_transforms(patch, parameters["rotation"], parameters["mirror_axes"], DS_SCALES_3D,
                                     parameters["dummy_2d"], mask_channels=[0])
    np.random.seed(0)
    for _ in range(3):
        batch = transforms(**sampler.generate_train_batch())
        assert isinstance(batch["data"], torch.Tensor) and batch["data"].dtype == torch.float32
        assert batch["data"].shape == (2, 1, *patch) and "seg" not in batch
        assert [tuple(t.shape) for t in batch["target"]] == [(2, 1, 8, 32, 32), (2, 1, 8, 16, 16), (2, 1, 4, 8, 8)]
        assert all(t.dtype == torch.float32 and set(t.unique().tolist()) <= {0.0, 1.0} for t in batch["target"])

    batch = validation_transforms(None)(**PatchSampler(cases, 2, patch, seed=0).generate_train_batch())
    assert isinstance(batch["target"], torch.Tensor) and batch["target"].shape == (2, 1, *patch)


class MaskChannelSampler(PatchSampler):
    """Carries an extra map (here: the label-1 mask) as seg channel 1."""

    def seg_channels(self, seg, properties, region):
        return np.concatenate([seg, (seg == 1).astype(seg.dtype)])


def test_extra_seg_channels_follow_spatial_augmentation_and_downsampling(cases):
    patch = (12, 12, 12)
    parameters = augmentation_parameters(patch)
    sampler = MaskChannelSampler(cases, 4, parameters["initial_patch_size"], patch, 1.0, seed=0)
    transforms = training_transforms(patch, parameters["rotation"], parameters["mirror_axes"], DS_SCALES_3D, False)
    np.random.seed(1)
    for _ in range(3):
        batch = transforms(**sampler.generate_train_batch())
        for target in batch["target"]:
            assert target.shape[1] == 2
            assert torch.equal(target[:, 1], (target[:, 0] == 1).float())
        assert batch["target"][0][:, 1].sum() > 0


class NamedMaskSampler(MaskChannelSampler):
    """The label-1 mask as a named target."""

    def __init__(self, *args, name: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_targets = (name,)


@pytest.mark.parametrize("name", ["weights", "ignore"])
def test_named_targets_leave_the_target_after_augmentation(cases, name):
    patch = (12, 12, 12)
    parameters = augmentation_parameters(patch)
    sampler = NamedMaskSampler(cases, 4, parameters["initial_patch_size"], patch, 1.0, seed=0, name=name)
    transforms = training_transforms(patch, parameters["rotation"], parameters["mirror_axes"], DS_SCALES_3D, False,
                                     extra_targets=sampler.extra_targets)
    np.random.seed(1)
    batch = transforms(**sampler.generate_train_batch())
    assert [tuple(t.shape) for t in batch[name]] == [(4, 1, 12, 12, 12), (4, 1, 12, 6, 6), (4, 1, 6, 3, 3)]
    assert [t.shape[1] for t in batch["target"]] == [1, 1, 1], "the label map alone stays in target"
    for target, named in zip(batch["target"], batch[name]):
        mask = (target == 1).float()
        # "weights" arrive as stacked; "ignore" travels as its complement and arrives as 1 where ignored
        assert torch.equal(named, mask if name == "weights" else 1 - mask)
    assert batch[name][0].sum() > 0 and batch[name][0].dtype == torch.float32


def test_mask_outside_zeroes_masked_channels_only():
    data = np.ones((1, 2, 4, 4), np.float32)
    seg = np.zeros((1, 1, 4, 4), np.int8)
    seg[..., :2] = -1
    data = MaskOutsideTransform([1])(data=data, seg=seg)["data"]
    assert data[0, 0].min() == 1 and np.all(data[0, 1, :, :2] == 0) and np.all(data[0, 1, :, 2:] == 1)


def test_debug_mode_2d_iterators(cases):
    configuration, plans = plans_for((32, 32), batch_size=3)
    train, val = make_batch_iterators(cases, cases, configuration, plans, [[1, 1], [0.5, 0.5]], 0, seed=0)
    with train, val:
        for batch in (next(train), next(val)):
            assert isinstance(batch["data"], torch.Tensor) and batch["data"].shape == (3, 1, 32, 32)
            assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in batch["target"])
            assert [tuple(t.shape) for t in batch["target"]] == [(3, 1, 32, 32), (3, 1, 16, 16)]


def test_background_workers_produce_batches_and_shut_down(cases):
    configuration, plans = plans_for((8, 32, 32))
    train, val = make_batch_iterators(cases, cases, configuration, plans, DS_SCALES_3D, 2, seed=0)
    with train, val:
        batches = [next(train) for _ in range(3)] + [next(val)]
        workers = train.augmenter._processes + val.augmenter._processes
        assert len(workers) == 3
    assert all(batch["data"].shape == (2, 1, 8, 32, 32) for batch in batches)
    assert all(tuple(batch["target"][2].shape) == (2, 1, 4, 8, 8) for batch in batches)
    assert all(not worker.is_alive() for worker in workers)
    assert train.augmenter._processes == [] and val.augmenter._processes == []


def test_default_augmentation_workers(monkeypatch):
    monkeypatch.setenv("boxunet_n_proc_DA", "3")
    assert default_augmentation_workers() == 3
    monkeypatch.setenv("boxunet_n_proc_DA", "many")
    with pytest.raises(BoxunetError, match="boxunet_n_proc_DA"):
        default_augmentation_workers()
    monkeypatch.delenv("boxunet_n_proc_DA")
    assert 1 <= default_augmentation_workers() <= 12
