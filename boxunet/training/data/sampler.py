"""Random training patches with foreground oversampling, read straight from the memory-mapped cases."""
import random

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from boxunet.preprocessing.grid_labels import open_target
from boxunet.training.data.dataset import PreprocessedCases


def read_region(array, region: list[tuple[int, int]], fill: float) -> np.ndarray:
    """``array[:, region]`` for a region that may extend beyond the array; the outside is ``fill``.

    Only the part inside the array is sliced, so a blosc2 array decompresses just the chunks it touches.
    """
    inside, padding = [slice(None)], [(0, 0)]
    for (low, high), size in zip(region, array.shape[1:]):
        start, stop = min(max(low, 0), size), max(min(high, size), 0)
        stop = max(stop, start)
        inside.append(slice(start, stop))
        padding.append((start - low, high - stop))
    patch = np.asarray(array[tuple(inside)])
    if any(p != (0, 0) for p in padding):
        patch = np.pad(patch, padding, mode="constant", constant_values=fill)
    return patch


class PatchSampler(SlimDataLoaderBase):
    """An endless source of batches ``{"data", "seg", "keys"}`` for a batchgenerators augmenter.

    ``patch_size`` (2 or 3 values) is the size sampled, ``final_patch_size`` the size left after the
    spatial augmentation's centre crop (default: the same). Random patches are placed so that the
    final patch lies inside the image (centred when the image is smaller); forced-foreground patches
    are centred on a random voxel of a random class present in the case's ``class_locations`` and
    shifted only as far as needed to keep the final patch inside. Outside the image, data is 0 and
    seg -1. With 2 values, cases are sampled slice-wise along their first axis. With a
    ``previous_stage_folder`` (a target store of a cascade's previous-stage labels on this grid), those
    labels are read from the same region and stacked as the last seg channel.

    Oversampling is deterministic by default: the last ``batch_size - round(batch_size * (1 - p))``
    samples of every batch are forced foreground; ``probabilistic_oversampling`` forces each sample
    with probability ``p`` instead. Randomness comes from ``seed`` and the worker's thread id.

    Named targets: a subclass may stack per-voxel maps after the label map (``seg_channels``) and name
    them in ``extra_targets``: ``"weights"`` (voxel weights of the loss) and ``"ignore"`` (voxels the loss
    ignores), which leave the augmentation as ``batch["weights"]`` and ``batch["ignore"]``. ``"ignore"``
    travels as its complement (1 where the loss uses the voxel), so that the 0 filled in beyond the image
    means "ignored".
    """

    extra_targets: tuple[str, ...] = ()

    def __init__(self, cases: PreprocessedCases, batch_size: int, patch_size, final_patch_size=None,
                 oversample_foreground_percent: float = 0.33, probabilistic_oversampling: bool = False,
                 seed: int = 0, forced_foreground: list[bool] | None = None, previous_stage_folder=None):
        super().__init__(cases, batch_size)
        self.previous_stage_folder = previous_stage_folder
        self._opened_targets = {}
        self.patch_size = tuple(int(p) for p in patch_size)
        self.final_patch_size = tuple(int(p) for p in (final_patch_size or patch_size))
        if len(self.final_patch_size) != len(self.patch_size) or len(self.patch_size) not in (2, 3) or \
                any(f > p for f, p in zip(self.final_patch_size, self.patch_size)):
            raise ValueError(f"patch size {self.patch_size} and final patch size {self.final_patch_size} do not fit")
        self.oversample_foreground_percent = oversample_foreground_percent
        self.probabilistic_oversampling = probabilistic_oversampling
        if forced_foreground is not None and len(forced_foreground) != batch_size:
            raise ValueError(f"forced_foreground needs {batch_size} flags, got {len(forced_foreground)}")
        self.forced_foreground = forced_foreground
        self.seed = seed
        self.rng = np.random.default_rng([seed, 0])

    def set_thread_id(self, thread_id: int) -> None:
        """Called by MultiThreadedAugmenter in each worker: gives every worker its own random stream.

        Python's ``random`` is seeded too: some batchgenerators transforms draw from it, and forked
        workers would otherwise all repeat the parent's stream.
        """
        super().set_thread_id(thread_id)
        self.rng = np.random.default_rng([self.seed, thread_id])
        random.seed(f"{self.seed}-{thread_id}")

    def generate_train_batch(self) -> dict:
        """One batch: data (b, c, *patch) float32, seg (b, s, *patch), keys (case ids)."""
        case_ids = [self._data.case_ids[i] for i in self.rng.integers(len(self._data), size=self.batch_size)]
        samples = [self._sample(case_id, self._force_foreground(index)) for index, case_id in enumerate(case_ids)]
        return {"data": np.stack([s[0] for s in samples]), "seg": np.stack([s[1] for s in samples]),
                "keys": case_ids}

    def seg_channels(self, seg: np.ndarray, properties: dict, region: list[tuple[int, int]]) -> np.ndarray:
        """The seg channels of one sample; ``seg`` is the (1, *patch) label map read from ``region``.

        ``region`` is the sampled (start, stop) per stored axis, possibly beyond the image (a 2D sample
        has ``(slice, slice + 1)`` first). Subclasses stack extra per-voxel maps (an ignore mask, a
        weight map) after channel 0 here, so that they follow every spatial augmentation of the labels.
        """
        return seg

    def _force_foreground(self, index: int) -> bool:
        """Whether sample ``index`` is centred on foreground: the explicit flags if given (a rank's share of
        the global batch), else the last round(B * p) samples, or each with probability p."""
        p = self.oversample_foreground_percent
        if self.probabilistic_oversampling:
            return self.rng.uniform() < p
        if self.forced_foreground is not None:
            return self.forced_foreground[index]
        return index >= round(self.batch_size * (1 - p))

    def _sample(self, case_id: str, force_foreground: bool) -> tuple[np.ndarray, np.ndarray]:
        data, seg, properties = self._data.load(case_id)
        shape = data.shape[1:]
        location = self._foreground_location(properties) if force_foreground else None
        region = []
        if len(self.patch_size) == 2:
            index = int(location[0]) if location is not None else int(self.rng.integers(shape[0]))
            region.append((index, index + 1))
            shape, location = shape[1:], None if location is None else location[1:]
        region += [(start, start + size) for start, size in zip(self._patch_start(shape, location), self.patch_size)]
        data_patch, seg_patch = read_region(data, region, 0), read_region(seg, region, -1)
        if len(self.patch_size) == 2:
            data_patch, seg_patch = data_patch[:, 0], seg_patch[:, 0]
        channels = self.seg_channels(seg_patch, properties, region)
        if self.previous_stage_folder is not None:
            previous = read_region(self.stored_target(self.previous_stage_folder, case_id), region, 0)[:1]
            previous = previous.astype(channels.dtype)
            channels = np.concatenate([channels, previous[:, 0] if len(self.patch_size) == 2 else previous])
        return data_patch, channels

    def stored_target(self, folder, case_id: str):
        """The memory-mapped target of ``case_id`` in the target store ``folder``, opened once per worker."""
        key = (str(folder), case_id)
        if key not in self._opened_targets:
            self._opened_targets[key] = open_target(folder, case_id)
        return self._opened_targets[key]

    def _foreground_location(self, properties: dict) -> list[int] | None:
        locations = properties.get("class_locations", {})
        present = sorted(key for key, voxels in locations.items() if len(voxels))
        if not present:
            return None
        voxels = locations[present[self.rng.integers(len(present))]]
        return voxels[self.rng.integers(len(voxels))]

    def _patch_start(self, shape, location) -> list[int]:
        """Start of the sampled patch per axis, chosen through the position of the final patch inside it."""
        starts = []
        for axis, (size, final, sampled) in enumerate(zip(shape, self.final_patch_size, self.patch_size)):
            low, high = (0, size - final) if size >= final else ((size - final) // 2,) * 2
            if location is None:
                final_start = int(self.rng.integers(low, high + 1))
            else:
                final_start = min(max(int(location[axis]) - final // 2, low), high)
            starts.append(final_start - (sampled - final) // 2)
        return starts


class ClassBalancedSampler(PatchSampler):
    """Patches centred with equal probability on a random position or on a voxel of each of ``centre_classes``
    present in the case ([KiTS19 coarse-to-fine]'s "dense training": 1/3 background, 1/3 kidney, 1/3 tumor for classes
    kidney and tumor); the oversampling options are not used."""

    def __init__(self, *args, centre_classes: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.centre_classes = [str(c) for c in centre_classes]

    def _force_foreground(self, index: int) -> bool:
        return True

    def _foreground_location(self, properties: dict) -> list[int] | None:
        locations = properties.get("class_locations", {})
        choices = [None] + [c for c in self.centre_classes if len(locations.get(c, ()))]
        chosen = choices[self.rng.integers(len(choices))]
        if chosen is None:
            return None
        voxels = locations[chosen]
        return voxels[self.rng.integers(len(voxels))]
