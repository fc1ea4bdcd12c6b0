"""Training and validation batch iterators: patch sampling plus augmentation in background workers.

Workers hand numpy arrays to this process, which turns them into float tensors (pinned when CUDA is
available). Torch tensors made in a worker would be shared through file descriptors served by that
worker, and a batch still queued when the workers stop could then no longer be received.
"""
import os

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from boxunet.errors import BoxunetError
from boxunet.parallel import default_num_processes
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.previous_stage import previous_stage_labels
from boxunet.training.data.augmentation import augmentation_parameters, training_transforms, validation_transforms
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.data.sampler import PatchSampler

WORKERS_VARIABLE = "boxunet_n_proc_DA"
MAX_DEFAULT_WORKERS = 12


def default_augmentation_workers() -> int:
    """Training augmentation workers: ``$boxunet_n_proc_DA`` if set (0 = no background workers), else
    nnU-Net's default of 12 capped at the cores available (2 on a 2-core machine)."""
    value = os.environ.get(WORKERS_VARIABLE)
    if value is None:
        return min(default_num_processes(), MAX_DEFAULT_WORKERS)
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise BoxunetError(f"{WORKERS_VARIABLE}={value!r}: expected a whole number >= 0 (0 = no background workers)")
    return workers


class BatchIterator:
    """An endless iterator over augmented batches with ``data``, ``target`` and the named targets as float tensors;
    ``close()`` (or leaving a ``with`` block) stops its workers."""

    def __init__(self, augmenter, pin_memory: bool = False):
        self.augmenter = augmenter
        self.pin_memory = pin_memory

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self.augmenter)
        for key in ("data", "target", "ignore", "weights"):
            if key not in batch:
                continue
            value = batch[key]
            batch[key] = [self._tensor(v) for v in value] if isinstance(value, list) else self._tensor(value)
        return batch

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array).float()
        return tensor.pin_memory() if self.pin_memory else tensor

    def close(self) -> None:
        """Shut the background workers down (nothing to do without workers); safe to call twice."""
        if isinstance(self.augmenter, MultiThreadedAugmenter):
            self.augmenter._finish()


    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _stream_seed(seed: int, stream: int, worker: int = 0) -> int:
    return int(np.random.SeedSequence([seed, stream, worker]).generate_state(1)[0])


def _augmenter(sampler: PatchSampler, transforms, num_processes: int, seed: int, stream: int,
               pin_memory: bool) -> BatchIterator:
    if num_processes == 0:
        return BatchIterator(SingleThreadedAugmenter(sampler, transforms), pin_memory)
    seeds = [_stream_seed(seed, stream, worker) for worker in range(num_processes)]
    return BatchIterator(MultiThreadedAugmenter(sampler, transforms, num_processes, num_cached_per_queue=2,
                                                seeds=seeds), pin_memory)


def make_batch_iterators(train_cases: PreprocessedCases, val_cases: PreprocessedCases,
                         configuration: ConfigurationPlan, plans: Plans, deep_supervision_scales: list | None,
                         num_processes: int, seed: int, oversample: float = 0.33,
                         batch_size: int | None = None, forced_foreground: list[bool] | None = None,
                         pin_memory: bool = False, sampler_class=PatchSampler,
                         sampler_arguments: dict | None = None,
                         previous_stage_folder=None) -> tuple[BatchIterator, BatchIterator]:
    """Endless ``(train, validation)`` batch iterators for one configuration.

    Training batches are sampled at the enlarged initial patch size and augmented; validation batches
    are sampled at the final patch size and only get the deep-supervision targets. Both oversample
    foreground by ``oversample``. Training uses ``num_processes`` workers, validation half as many (at
    least one); with ``num_processes == 0`` everything runs in this process (debugging), where the
    augmentation draws from numpy's global random state. ``batch_size`` defaults to the plans';
    ``forced_foreground`` gives explicit per-sample oversampling flags (a DDP rank's share of the global
    batch); ``pin_memory`` pins batches for fast copies to a CUDA device. ``sampler_class`` (a PatchSampler
    subclass, e.g. one that adds box-derived seg channels) is built with ``sampler_arguments`` as extra
    keyword arguments. ``previous_stage_folder`` (a cascade) adds the previous stage's labels of each case,
    stored on this grid, to ``data`` as one-hot channels (perturbed in training).
    """
    parameters = augmentation_parameters(configuration.patch_size)
    batch_size = batch_size or configuration.batch_size
    mask_channels = [channel for channel, n in enumerate(plans.normalization) if n.use_nonzero_mask]
    extra = dict(sampler_arguments or {})
    if previous_stage_folder is not None:
        extra["previous_stage_folder"] = previous_stage_folder
    previous_labels = previous_stage_labels(plans) if previous_stage_folder is not None else None
    train_sampler = sampler_class(train_cases, batch_size, parameters["initial_patch_size"], configuration.patch_size,
                                  oversample, seed=_stream_seed(seed, 0), forced_foreground=forced_foreground, **extra)
    val_sampler = sampler_class(val_cases, batch_size, configuration.patch_size, oversample_foreground_percent=oversample,
                                seed=_stream_seed(seed, 1), forced_foreground=forced_foreground, **extra)
    train_transforms = training_transforms(configuration.patch_size, parameters["rotation"], parameters["mirror_axes"],
                                           deep_supervision_scales, parameters["dummy_2d"], mask_channels,
                                           tensors=False, previous_stage_labels=previous_labels,
                                           extra_targets=train_sampler.extra_targets)
    val_transforms = validation_transforms(deep_supervision_scales, tensors=False, previous_stage_labels=previous_labels,
                                           extra_targets=val_sampler.extra_targets)
    val_workers = max(1, num_processes // 2) if num_processes else 0
    return (_augmenter(train_sampler, train_transforms, num_processes, seed, 2, pin_memory),
            _augmenter(val_sampler, val_transforms, val_workers, seed, 3, pin_memory))
