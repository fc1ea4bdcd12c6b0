"""The training loop: one configuration, one fold, on CPU, one GPU or several (data parallel).

``Trainer`` keeps the loop; networks, data pipeline, losses, validation and export live in their own modules.
Two-step construction: the constructor records a ``TrainingSetup`` and the options; ``initialize()`` (called
by the run) builds network, optimizer and loss. Subclasses use the hooks below (documentation/training.md).
"""
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from boxunet.errors import BoxunetError
from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.atomic import read_json, write_json
from boxunet.io.checkpoint import load_checkpoint, save_checkpoint
from boxunet.nets.precision import autocast, resolve_precision
from boxunet.nets.unet import build_network, deep_supervision_scales
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.grid_labels import open_target
from boxunet.preprocessing.previous_stage import append_previous_stage, network_input_channels
from boxunet.training.data.augmentation import augmentation_parameters
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.data.pipeline import default_augmentation_workers, make_batch_iterators
from boxunet.training.distributed import (ProcessGroupInfo, all_reduce_sum, barrier, rank_share_of_batch,
                                          training_network)
from boxunet.training.losses import (DeepSupervisionLoss, DiceBCELoss, DiceCELoss, deep_supervision_weights,
                                     labels_to_regions)
from boxunet.training.options import TrainingOptions
from boxunet.training.previous_stage import previous_stage_store
from boxunet.training.progress import LogFile, TrainingProgress, WaitTimer
from boxunet.training.schedules import PAPER_LEARNING_RATE, paper_learning_rate, poly_learning_rate
from boxunet.training.setup import TrainingSetup
from boxunet.training.validation import validate_fold


class Trainer:
    """Trains one configuration on one fold and validates it on the held-out cases."""

    options_class: ClassVar[type[TrainingOptions]] = TrainingOptions  # a subclass for trainers with own options

    def __init__(self, setup: TrainingSetup, options: TrainingOptions, group: ProcessGroupInfo = ProcessGroupInfo()):
        self.check_options(options)
        self.setup, self.options, self.group, self.device = setup, options, group, group.device
        self.plans, self.configuration, self.fold = setup.plans, setup.configuration, setup.fold
        self.folders, self.output_folder = setup.folders, setup.output
        self.train_cases, self.val_cases = setup.train_cases, setup.val_cases
        self.labels = self.plans.label_set
        self.precision = resolve_precision(self.device, options.precision)  # fp32, bf16 or fp16
        self.dataset_json = read_json(self.folders.preprocessed / "dataset.json")
        self.mirror_axes = tuple(augmentation_parameters(self.configuration.patch_size)["mirror_axes"])
        self.progress = TrainingProgress()
        self.best_ema = -1.0
        self.current_epoch = 0
        self.later_epochs = 0  # epochs of networks a multi-network run trains after this one (time estimates)
        self.log = LogFile(self.output_folder / "training_log.txt", echo=options.progress_bar) if group.is_main else None
        self.network = self.optimizer = self.loss = self.grad_scaler = self.training_network = None
        self.previous_stage_folder: Path | None = None
        self._targets: Path | None = None
        self._iterators = None

    @classmethod
    def check_options(cls, options: TrainingOptions) -> None:
        """The options must be of this trainer's ``options_class``."""
        if type(options) is not cls.options_class:
            raise BoxunetError(f"{cls.__name__} takes {cls.options_class.__name__}, not {type(options).__name__}")

    @property
    def shows_progress_bars(self) -> bool:
        """Progress bars on the main process, unless ``--quiet``, when a terminal is attached."""
        return self.options.progress_bar and self.group.is_main and sys.stderr.isatty()

    @property
    def num_outputs(self) -> int:
        return self.labels.num_outputs

    def initialize(self) -> None:
        """Build the network, optimizer and loss (once; the run calls it before training or validation). A subclass
        that must prepare something first (derived grids, a case classification) does so, then calls this."""
        if self.network is not None:
            return
        torch.manual_seed(self.options.seed)
        self.network = self.build_network(self.plans, self.configuration, self.num_outputs,
                                          self.network_settings()).to(self.device)
        self.optimizer = self.build_optimizer()
        self.loss = self.build_loss()
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.training_network = self._wrap_network()

    # ---------------------------------------------------------------- hooks that subclasses may change
    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int,
                      settings: Mapping) -> nn.Module:
        """The network: the plans' U-Net with deep supervision. ``settings`` are what ``network_settings``
        records beyond the plans (a checkpoint's state at prediction time), so training and prediction build
        the network the same way."""
        return build_network(configuration.architecture, network_input_channels(plans, configuration), num_outputs,
                             deep_supervision=True)

    def network_settings(self) -> dict:
        """Plain values beyond the plans that ``build_network`` needs (recorded in every checkpoint): none here."""
        return {}

    @classmethod
    def predict_preprocessed(cls, networks: list[nn.Module], data: torch.Tensor, configuration: ConfigurationPlan,
                             num_outputs: int, mirror_axes: tuple, step_size: float, device: torch.device,
                             precision: str) -> tuple[torch.Tensor, dict]:
        """Logits ``(num_outputs, *shape)`` of one preprocessed case ``(C, *shape)`` from the folds' networks
        (sliding window, logits averaged, then ``decision_logits``), and details for the prediction report (none
        here)."""
        logits = predict_sliding_window(networks, data, configuration.patch_size, num_outputs, step_size=step_size,
                                        mirror_axes=mirror_axes, device=device, precision=precision)
        return cls.decision_logits(logits, channel_axis=0), {}

    @classmethod
    def decision_logits(cls, logits: torch.Tensor, channel_axis: int) -> torch.Tensor:
        """The logits whose argmax (sigmoid in region mode) is the prediction: the network's own here; a trainer
        whose loss shifts the decision (class-weighted cross-entropy) corrects them."""
        return logits

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD with Nesterov momentum (nnU-Net's defaults), or Adam with ``schedule="paper"``."""
        o = self.options
        if o.schedule == "paper":
            return torch.optim.Adam(self.network.parameters(), lr=PAPER_LEARNING_RATE, weight_decay=o.weight_decay)
        return torch.optim.SGD(self.network.parameters(), lr=o.initial_lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, nesterov=True)

    def segmentation_loss(self) -> nn.Module:
        """The loss of one output: Dice + CE (sigmoid Dice + BCE for regions)."""
        batch_dice = self.configuration.batch_dice
        return DiceBCELoss(batch_dice=batch_dice) if self.labels.region_based else DiceCELoss(batch_dice=batch_dice)

    def build_loss(self) -> nn.Module:
        """``segmentation_loss`` weighted over the deep-supervision outputs."""
        loss = self.segmentation_loss()
        weights = deep_supervision_weights(len(self.deep_supervision_scales))
        if self.group.distributed and len(weights) > 1:
            weights[-1] = 1e-6  # DDP needs every output head in the graph (a weight of 0 would skip it)
        return DeepSupervisionLoss(loss, weights)

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of ``epoch``: poly decay, or ``paper_learning_rate`` with ``schedule="paper"``."""
        if self.options.schedule == "paper":
            return paper_learning_rate(epoch, self.options.epochs)
        return poly_learning_rate(self.options.initial_lr, epoch, self.options.epochs)

    def loss_inputs(self, batch: dict) -> tuple[list, list | None, list | None]:
        """Targets, ignore masks and voxel weight maps per deep-supervision output (the masks and maps when the
        sampler names them, see boxunet.training.data.sampler)."""
        targets = [t.to(self.device, non_blocking=True) for t in batch["target"]]
        targets = [labels_to_regions(t, self.labels.regions) for t in targets] if self.labels.region_based else \
            [t.long() for t in targets]
        ignore = [m.to(self.device, non_blocking=True) > 0.5 for m in batch["ignore"]] if "ignore" in batch else None
        weights = [w.to(self.device, non_blocking=True) for w in batch["weights"]] if "weights" in batch else None
        return targets, ignore, weights

    def compute_loss(self, outputs, batch: dict) -> tuple[torch.Tensor, list]:
        """The loss of the network's ``outputs`` on ``batch``, and the targets (``loss_inputs``) it used."""
        targets, ignore, weights = self.loss_inputs(batch)
        return self.loss(outputs, targets, ignore, weights), targets

    def batch_input(self, batch: dict) -> torch.Tensor:
        """The network input of a batch, on the device."""
        return batch["data"].to(self.device, non_blocking=True)

    def segmentation_outputs(self, outputs) -> list[torch.Tensor]:
        """The segmentation logits (highest resolution first) among what the training network returns."""
        return outputs

    def prepare_targets(self) -> Path | None:
        """Called once before training: the target store to train on (boxunet.preprocessing.grid_labels), or
        None for the preprocessed label maps. Box trainers make their pseudo masks here."""
        return None

    def sampler_options(self, targets: Path | None) -> dict:
        """``sampler_class`` and ``sampler_arguments`` for the batch iterators, given ``prepare_targets``'s store
        (default: the plain PatchSampler on the preprocessed labels)."""
        return {}

    # ------------------------------------------------------------------------------------ cascade
    def prepare_previous_stage(self) -> Path | None:
        """For a cascade configuration: the previous stage's held-out predictions of this fold's cases, brought
        onto this grid once (boxunet.training.previous_stage explains which predictions); None otherwise."""
        if self.configuration.previous_stage and self.previous_stage_folder is None:
            self.previous_stage_folder = previous_stage_store(self.setup, type(self).__name__,
                                                              self.dataset_json["file_ending"], self.group)
        return self.previous_stage_folder

    def network_input(self, case_id: str, data: np.ndarray) -> np.ndarray:
        """A whole preprocessed case's network input: ``data``, plus the previous stage's one-hot channels in a
        cascade (``prepare_previous_stage`` must have run)."""
        if self.previous_stage_folder is None:
            return data
        return append_previous_stage(data, np.asarray(open_target(self.previous_stage_folder, case_id)[0]), self.plans)

    # ---------------------------------------------------------------------------------------- set-up
    @property
    def deep_supervision_scales(self) -> list:
        return deep_supervision_scales(self.configuration.architecture)

    def preprocessed_cases(self, case_ids: list[str]) -> PreprocessedCases:
        """``case_ids`` of this configuration's preprocessed data."""
        return PreprocessedCases(self.folders.preprocessed / self.configuration.data_identifier, case_ids)

    def _wrap_network(self) -> nn.Module:
        """The network as the training steps call it (compiled, data parallel)."""
        return training_network(self.network, self.group, self.options.compile)

    def _seed_epoch(self, epoch: int) -> None:
        """Derive every random stream of an epoch from (seed, epoch, rank), so a resumed run repeats it."""
        seed = self.options.seed + 1000 * epoch + self.group.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)  # batchgenerators draws some augmentation parameters from Python's random

    def _iterators_for(self, epoch: int):
        """Batch iterators: rebuilt every epoch in single-process mode (so an epoch's batches depend only on
        (seed, epoch, rank) and a resumed run repeats them exactly), built once with background workers."""
        workers = self.options.augmentation_workers
        workers = default_augmentation_workers() if workers is None else workers
        if self._iterators is None or workers == 0:
            self.close_iterators()
            forced = rank_share_of_batch(self.configuration.batch_size, self.options.oversample_foreground,
                                         self.group.rank, self.group.world_size)
            self._iterators = make_batch_iterators(
                self.preprocessed_cases(self.train_cases), self.preprocessed_cases(self.val_cases),
                self.configuration, self.plans, self.deep_supervision_scales, workers,
                seed=self.options.seed + 1000 * epoch + self.group.rank, oversample=self.options.oversample_foreground,
                batch_size=len(forced), forced_foreground=forced, pin_memory=self.device.type == "cuda",
                previous_stage_folder=self.previous_stage_folder, **self.sampler_options(self._targets))
        return self._iterators

    def close_iterators(self) -> None:
        """Stop the background augmentation workers, if any."""
        for iterator in self._iterators or ():
            iterator.close()
        self._iterators = None

    # --------------------------------------------------------------------------------------- steps
    def train_step(self, batch: dict) -> float:
        """One optimizer step on one batch; returns the loss."""
        data = self.batch_input(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):  # the losses run in float32
            loss, _ = self.compute_loss(self.training_network(data), batch)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.options.gradient_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.options.gradient_clip)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: dict) -> tuple[float, torch.Tensor]:
        """Loss and per-class (TP, FP, FN) counts of the full-resolution output on one batch."""
        data = self.batch_input(batch)
        with autocast(self.device, self.precision):  # the losses run in float32
            outputs = self.training_network(data)
            loss, targets = self.compute_loss(outputs, batch)
        output, target = self.decision_logits(self.segmentation_outputs(outputs)[0].float(), 1), targets[0]
        if self.labels.region_based:
            predicted, reference = output > 0, target > 0.5
        else:
            classes = torch.arange(1, self.num_outputs, device=output.device).view(1, -1, *[1] * (output.ndim - 2))
            predicted, reference = output.argmax(1, keepdim=True) == classes, target == classes
        dims = [0] + list(range(2, output.ndim))
        counts = torch.stack([(predicted & reference).sum(dims), (predicted & ~reference).sum(dims),
                              (~predicted & reference).sum(dims)])
        return float(loss), counts.long()

    # ---------------------------------------------------------------------------------- the loop
    def run_training(self) -> None:
        """Train from ``current_epoch`` to ``options.epochs``, checkpointing as it goes."""
        o = self.options
        self.prepare_previous_stage()
        self._targets = self.prepare_targets()
        if self.group.is_main:
            self._write_debug()
            todo = (f"epochs {self.current_epoch}..{o.epochs - 1}" if self.current_epoch < o.epochs else
                    f"all {o.epochs} epochs already done (give a larger --epochs with --c to extend)")
            self.log(f"training {type(self).__name__} {self.configuration.name} fold {self.fold}: "
                     f"{len(self.train_cases)} training / {len(self.val_cases)} validation cases, "
                     f"{todo}, device {self.device}, {self.precision}, world size {self.group.world_size}")
        try:
            for epoch in range(self.current_epoch, o.epochs):
                self._run_epoch(epoch)
                self.current_epoch = epoch + 1
                if self.group.is_main and ((epoch + 1) % o.save_every == 0 or epoch + 1 == o.epochs):
                    self.save("checkpoint_latest.pth")
        finally:
            self.close_iterators()
        if self.group.is_main:
            self.save("checkpoint_final.pth")
            self.save("checkpoint_latest.pth")
        barrier(self.group)

    def _run_epoch(self, epoch: int) -> None:
        o = self.options
        started = time.perf_counter()
        learning_rate = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self._seed_epoch(epoch)
        train_iterator, val_iterator = self._iterators_for(epoch)
        batches = WaitTimer(train_iterator)
        self.training_network.train()
        losses = [self.train_step(next(batches))
                  for _ in tqdm(range(o.iterations_per_epoch), desc=f"epoch {epoch}", leave=False,
                                disable=not self.shows_progress_bars)]
        self.training_network.eval()
        class_names = self.labels.class_names
        val_losses, counts = [], torch.zeros(3, len(class_names), dtype=torch.long, device=self.device)
        for _ in range(o.validation_iterations):
            loss, batch_counts = self.validation_step(next(val_iterator))
            val_losses.append(loss)
            counts = counts + batch_counts
        # float32 / int64 on the device (MPS has no float64); exact sums are formed on the CPU
        summed = all_reduce_sum(torch.tensor([sum(losses), len(losses), sum(val_losses), len(val_losses)],
                                             dtype=torch.float32, device=self.device), self.group).cpu().double()
        tp, fp, fn = all_reduce_sum(counts, self.group).cpu().double()
        # a class absent from every validation patch has no Dice (NaN), as in nnU-Net
        dice = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), torch.nan).tolist()
        val_loss = float(summed[2] / summed[3]) if summed[3] > 0 else float("nan")
        ema = self.progress.record(float(summed[0] / summed[1]), val_loss, dice, learning_rate,
                                   time.perf_counter() - started)
        if self.group.is_main:
            self.log(self.progress.epoch_line(epoch, o.epochs, class_names, self.later_epochs, batches.seconds))
            self.progress.plot(self.output_folder / "progress.png", class_names)
            if ema > self.best_ema:
                self.best_ema = ema
                self.current_epoch = epoch + 1
                self.save("checkpoint_best.pth")

    # ------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"network_weights": self.network.state_dict(), "optimizer_state": self.optimizer.state_dict(),
                "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
                "progress": self.progress.values, "best_ema": self.best_ema, "current_epoch": self.current_epoch,
                "trainer_name": type(self).__name__, "options": asdict(self.options),
                "configuration": self.configuration.name, "plans_name": self.plans.plans_name,
                "num_outputs": self.num_outputs, "inference_allowed_mirroring_axes": list(self.mirror_axes),
                **self.network_settings()}

    def save(self, name: str) -> None:
        save_checkpoint(self.state(), self.output_folder / name)

    def load(self, path: Path, weights_only: bool = False) -> None:
        """Restore a checkpoint (network only with ``weights_only``)."""
        state = load_checkpoint(path, map_location=self.device)
        if state.get("num_outputs", self.num_outputs) != self.num_outputs or state["configuration"] != self.configuration.name:
            raise BoxunetError(f"checkpoint {path} was trained for configuration {state['configuration']} with "
                               f"{state.get('num_outputs')} outputs; it does not fit {self.configuration.name} "
                               f"with {self.num_outputs} outputs")
        try:
            self.network.load_state_dict(state["network_weights"])
        except RuntimeError as error:
            raise BoxunetError(f"checkpoint {path} does not fit the network of the plans ({str(error).splitlines()[0]})") from None
        if weights_only:
            return
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.grad_scaler is not None and state.get("grad_scaler_state"):
            self.grad_scaler.load_state_dict(state["grad_scaler_state"])
        self.progress = TrainingProgress(state["progress"])
        self.current_epoch = int(state["current_epoch"])
        self.progress.truncate(self.current_epoch)
        self.best_ema = float(state["best_ema"])

    def _write_debug(self) -> None:
        write_json({"trainer": type(self).__name__, "fold": self.fold, "configuration": asdict(self.configuration),
                    "options": asdict(self.options), "plans_name": self.plans.plans_name,
                    "device": str(self.device), "world_size": self.group.world_size,
                    "train_cases": self.train_cases, "val_cases": self.val_cases,
                    "num_outputs": self.num_outputs, "torch": torch.__version__},
                   self.output_folder / "debug.json")

    # -------------------------------------------------------------------------------- validation
    def perform_validation(self) -> dict | None:
        """Predict the held-out cases at their original geometry and write ``validation/summary.json``
        (boxunet.training.validation); the summary on the main process, None on the others."""
        self.prepare_previous_stage()
        self.network.eval()
        return validate_fold(self)

    def validation_reference(self) -> Path:
        """The folder of label maps (original geometry) the validation predictions are scored against."""
        return self.folders.preprocessed / "gt_segmentations"
