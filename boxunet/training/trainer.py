"""The training loop: one configuration, one fold, on CPU, one GPU or several (data parallel).

``Trainer`` keeps the loop; the network (boxunet.nets), the data pipeline (boxunet.training.data), the
losses (boxunet.training.losses) and prediction/export (boxunet.inference) live in their own modules.
Subclasses change behaviour through the ``build_*`` hooks and ``loss_inputs`` (see
documentation/training.md); boxunet.trainers lists them by name.
"""
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from boxunet.errors import BoxunetError
from boxunet.evaluation.case_classification import REPORT_FILE
from boxunet.evaluation.metrics import evaluate_folders
from boxunet.inference.export import export_prediction
from boxunet.io.model_folder import write_model_files
from boxunet.inference.precision import resolve_precision
from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.atomic import read_json, write_json
from boxunet.io.checkpoint import load_checkpoint, save_checkpoint
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.nets.unet import build_network, deep_supervision_scales
from boxunet.paths import model_folder_name
from boxunet.planning.plans import ConfigurationPlan, Plans, evaluation_targets, regions_of
from boxunet.preprocessing.grid_labels import open_target, store_raw_label_maps
from boxunet.preprocessing.previous_stage import append_previous_stage, network_input_channels, read_previous_stage
from boxunet.training.data.augmentation import augmentation_parameters
from boxunet.training.data.dataset import PreprocessedCases
from boxunet.training.data.pipeline import default_augmentation_workers, make_batch_iterators
from boxunet.training.distributed import (ProcessGroupInfo, all_gather_objects, all_reduce_sum, barrier,
                                          rank_share_of_batch)
from boxunet.training.losses import DeepSupervisionLoss, DiceBCELoss, DiceCELoss, deep_supervision_weights
from boxunet.training.previous_stage import previous_stage_files
from boxunet.training.progress import LogFile, TrainingProgress

PAPER_LEARNING_RATE = 1e-3
PAPER_FINAL_FRACTION = 0.01  # seed 000 decays exponentially without giving the rate: 100-fold over the run is ours
SCHEDULES = ("poly", "paper")


def labels_to_regions(labels: torch.Tensor, regions: list) -> torch.Tensor:
    """Region targets ``(B, R, *)`` (float 0/1) of a label map ``(B, 1, *)``: channel r is 1 where the label is one
    of region r's values (``regions`` as ``regions_of`` returns them)."""
    return torch.cat([torch.isin(labels, torch.tensor(r, device=labels.device).reshape(-1)) for r in regions],
                     1).float()


@dataclass
class TrainingOptions:
    """Every setting of a run that is not in the plans (recorded in debug.json and the checkpoints)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    validation_iterations: int = 50
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    gradient_clip: float = 12.0
    oversample_foreground: float = 0.33
    augmentation_workers: int | None = None
    save_every: int = 10
    seed: int = 12345
    compile: bool = False
    save_probabilities: bool = False
    progress_bar: bool = True
    schedule: str = "poly"  # "poly": SGD + poly decay (nnU-Net); "paper": Adam 1e-3, exponential decay (seed 000)
    # used by the box trainers (documentation/box_supervision.md)
    group_networks: int = 3
    group_epochs: int | None = None
    box_loss: str = "vwce"


RUNTIME_OPTIONS = ("augmentation_workers", "save_probabilities", "compile", "progress_bar")


def result_options(options: TrainingOptions | dict) -> dict:
    """The options that change a run's result (all but ``RUNTIME_OPTIONS``), as a dict."""
    values = asdict(options) if isinstance(options, TrainingOptions) else options
    return {k: v for k, v in values.items() if k not in RUNTIME_OPTIONS}


def poly_learning_rate(initial: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """Polynomial decay: initial * (1 - epoch / epochs) ^ exponent."""
    return initial * (1 - min(epoch, epochs) / epochs) ** exponent


def paper_learning_rate(epoch: int, epochs: int) -> float:
    """Seed 000's exponential decay, spread over the run: 1e-3 * 0.01 ^ (epoch / epochs)."""
    return PAPER_LEARNING_RATE * PAPER_FINAL_FRACTION ** (min(epoch, epochs) / epochs)


class Trainer:
    """Trains one configuration on one fold and validates it on the held-out cases."""

    # options of TrainingOptions that only some trainers read (named on the command line for others: an error)
    TRAINER_SPECIFIC_OPTIONS = {"group_networks": "--k", "group_epochs": "--group-epochs", "box_loss": "--loss"}
    reads_options: tuple[str, ...] = ()  # the trainer-specific options this trainer reads

    def __init__(self, plans: Plans, configuration: ConfigurationPlan, fold: int | str, preprocessed_folder: Path,
                 output_folder: Path, train_cases: list[str], val_cases: list[str], options: TrainingOptions,
                 group: ProcessGroupInfo = ProcessGroupInfo()):
        self.plans, self.configuration, self.fold = plans, configuration, fold
        self.preprocessed_folder, self.output_folder = Path(preprocessed_folder), Path(output_folder)
        self.train_cases, self.val_cases = train_cases, val_cases
        self.options, self.group, self.device = options, group, group.device
        self.dataset_json = read_json(self.preprocessed_folder / "dataset.json")
        self.regions = regions_of(plans.labels)
        self.num_outputs = len(self.regions) if self.regions else len(plans.label_values)
        self.class_names = self._class_names()
        self.mirror_axes = tuple(augmentation_parameters(configuration.patch_size)["mirror_axes"])
        self.progress = TrainingProgress()
        self.best_ema = -1.0
        self.current_epoch = 0
        self.log = LogFile(self.output_folder / "training_log.txt", echo=options.progress_bar) if group.is_main else None
        torch.manual_seed(options.seed)
        self.network = self.build_network(plans, configuration, self.num_outputs).to(self.device)
        self.optimizer = self.build_optimizer()
        self.loss = self.build_loss()
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.training_network = self._wrap_network()
        self._iterators = None

    # ---------------------------------------------------------------- hooks that subclasses may change
    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int) -> nn.Module:
        """The U-Net from the plans with deep supervision. A classmethod: prediction rebuilds the network
        of a checkpoint through it without a trainer instance."""
        return build_network(configuration.architecture, network_input_channels(plans, configuration), num_outputs,
                             deep_supervision=True)

    @classmethod
    def network_from_checkpoint(cls, plans: Plans, configuration: ConfigurationPlan, state: dict) -> nn.Module:
        """The (untrained) network of a checkpoint's ``state``, for prediction without a trainer instance."""
        return cls.build_network(plans, configuration, int(state["num_outputs"]))

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
        return DiceBCELoss(batch_dice=batch_dice) if self.regions else DiceCELoss(batch_dice=batch_dice)

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
        """Targets, ignore masks and voxel weight maps per deep-supervision output."""
        targets = [t[:, :1].to(self.device, non_blocking=True) for t in batch["target"]]
        if self.regions:
            targets = [labels_to_regions(t, self.regions) for t in targets]
        else:
            targets = [t.long() for t in targets]
        return targets, None, None

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

    def sampler_options(self) -> dict:
        """``sampler_class`` and ``sampler_arguments`` for the batch iterators (default: plain PatchSampler)."""
        return {}

    # ------------------------------------------------------------------------------------ cascade
    previous_stage_folder: Path | None = None

    def prepare_previous_stage(self) -> Path | None:
        """For a cascade configuration: the previous stage's held-out predictions of this fold's cases, brought
        onto this grid once (boxunet.training.previous_stage explains which predictions); None otherwise."""
        if not self.configuration.previous_stage or self.previous_stage_folder is not None:
            return self.previous_stage_folder
        dataset = self.preprocessed_folder.name
        cases = self.train_cases + self.val_cases
        files = previous_stage_files(dataset, type(self).__name__, self.plans.plans_name, self.configuration.name,
                                     self.configuration.previous_stage, cases, self.dataset_json["file_ending"],
                                     read_json(self.preprocessed_folder / "splits_final.json"))
        folder = (self.preprocessed_folder / "previous_stage" /
                  f"{model_folder_name(type(self).__name__, self.plans.plans_name, self.configuration.previous_stage)}"
                  f"_on_{self.configuration.data_identifier}")
        if self.group.is_main:
            store_raw_label_maps(folder, PreprocessedCases(self.preprocessed_folder / self.configuration.data_identifier,
                                                           cases), files, self.plans, self.configuration,
                                 lambda path, properties: read_previous_stage(path, properties, self.plans,
                                                                              self.configuration))
        barrier(self.group)
        self.previous_stage_folder = folder
        return folder

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

    def _class_names(self) -> list[str]:
        if self.regions:
            return [name for name, value in self.plans.labels.items() if value not in (0, [0])]
        names = {v: k for k, v in self.plans.labels.items() if isinstance(v, int)}
        return [names.get(v, str(v)) for v in self.plans.label_values if v != 0]

    def _wrap_network(self) -> nn.Module:
        network = self.network
        if self.options.compile and self.device.type == "cuda":
            network = torch.compile(network)
        if self.group.distributed:
            if self.device.type == "cuda":
                network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
            network = DistributedDataParallel(network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return network

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda")

    def _seed_epoch(self, epoch: int) -> None:
        """Derive every random stream of an epoch from (seed, epoch, rank), so a resumed run repeats it."""
        seed = self.options.seed + 1000 * epoch + self.group.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)  # batchgenerators draws some augmentation parameters from Python's random

    def _iterators_for(self, epoch: int):
        """Batch iterators: rebuilt every epoch in single-process mode (so an epoch's batches depend only on
        (seed, epoch, rank) and a resumed run repeats them exactly), built once with background workers."""
        if self._iterators is None or self._augmentation_workers == 0:
            self.close_iterators()
            self._iterators = self._make_iterators(epoch)
        return self._iterators

    @property
    def _augmentation_workers(self) -> int:
        workers = self.options.augmentation_workers
        return default_augmentation_workers() if workers is None else workers

    def close_iterators(self) -> None:
        """Stop the background augmentation workers, if any."""
        for iterator in self._iterators or ():
            iterator.close()
        self._iterators = None

    def _make_iterators(self, epoch: int):
        workers = self._augmentation_workers
        forced = rank_share_of_batch(self.configuration.batch_size, self.options.oversample_foreground,
                                     self.group.rank, self.group.world_size)
        folder = self.preprocessed_folder / self.configuration.data_identifier
        return make_batch_iterators(
            PreprocessedCases(folder, self.train_cases), PreprocessedCases(folder, self.val_cases),
            self.configuration, self.plans, self.deep_supervision_scales, workers,
            seed=self.options.seed + 1000 * epoch + self.group.rank, oversample=self.options.oversample_foreground,
            batch_size=len(forced), forced_foreground=forced, pin_memory=self.device.type == "cuda",
            previous_stage_folder=self.previous_stage_folder, **self.sampler_options())

    # --------------------------------------------------------------------------------------- steps
    def train_step(self, batch: dict) -> float:
        """One optimizer step on one batch; returns the loss."""
        data = self.batch_input(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
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
        with self._autocast():
            outputs = self.training_network(data)
            loss, targets = self.compute_loss(outputs, batch)
        output, target = self.decision_logits(self.segmentation_outputs(outputs)[0].float(), 1), targets[0]
        if self.regions:
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
        if self.group.is_main:
            self._write_debug()
            todo = (f"epochs {self.current_epoch}..{o.epochs - 1}" if self.current_epoch < o.epochs else
                    f"all {o.epochs} epochs already done (give a larger --epochs with --c to extend)")
            self.log(f"training {type(self).__name__} {self.configuration.name} fold {self.fold}: "
                     f"{len(self.train_cases)} training / {len(self.val_cases)} validation cases, "
                     f"{todo}, device {self.device}, world size {self.group.world_size}")
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
        self.training_network.train()
        losses = [self.train_step(next(train_iterator))
                  for _ in tqdm(range(o.iterations_per_epoch), desc=f"epoch {epoch}", leave=False,
                                disable=not (o.progress_bar and self.group.is_main))]
        self.training_network.eval()
        val_losses, counts = [], torch.zeros(3, len(self.class_names), dtype=torch.long, device=self.device)
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
            self.log(self.progress.epoch_line(epoch, self.class_names))
            self.progress.plot(self.output_folder / "progress.png", self.class_names)
            if ema > self.best_ema:
                self.best_ema = ema
                self.current_epoch = epoch + 1
                self.save("checkpoint_best.pth")

    # ------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {
            "network_weights": self.network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "progress": self.progress.values,
            "best_ema": self.best_ema,
            "current_epoch": self.current_epoch,
            "trainer_name": type(self).__name__,
            "options": asdict(self.options),
            "configuration": self.configuration.name,
            "plans_name": self.plans.plans_name,
            "num_outputs": self.num_outputs,
            "inference_allowed_mirroring_axes": list(self.mirror_axes),
        }

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
        """Predict the held-out cases at their original geometry and write ``validation/summary.json``."""
        folder = self.output_folder / "validation"
        self.prepare_previous_stage()
        folder.mkdir(parents=True, exist_ok=True)
        if self.group.is_main:
            write_model_files(folder, self.plans.to_json(), self.preprocessed_folder / "dataset.json")
        cases = PreprocessedCases(self.preprocessed_folder / self.configuration.data_identifier, self.val_cases)
        ending = self.dataset_json["file_ending"]
        self.network.eval()
        precision = resolve_precision(self.device)
        own_cases = self.val_cases[self.group.rank::self.group.world_size]
        details = {}
        for case_id in tqdm(own_cases, desc="validation", disable=not (self.options.progress_bar and self.group.is_main)):
            data, _, properties = cases.load(case_id)
            data = self.network_input(case_id, np.asarray(data[:]))
            logits, details[case_id] = self.predict_preprocessed([self.network], torch.from_numpy(data),
                                                                 self.configuration, self.num_outputs, self.mirror_axes,
                                                                 0.5, self.device, precision)
            export_prediction(logits, properties, self.plans, self.configuration, folder / f"{case_id}{ending}",
                              save_probabilities=self.options.save_probabilities)
        details = all_gather_objects(details, self.group)
        if not self.group.is_main:
            return None
        write_json({"details": {case: value for case, value in sorted(details.items()) if value}}, folder / REPORT_FILE)
        labels = evaluation_targets(self.plans.labels)
        reference = self.validation_reference()
        description = parse_dataset_json(self.dataset_json, str(self.preprocessed_folder / "dataset.json"))
        summary = evaluate_folders(reference, folder, labels, ending, case_ids=self.val_cases,
                                   label_names=self.plans.labels,
                                   case_classification=description.case_classification)
        summary["reference_folder"] = str(reference)
        write_json(summary, folder / "summary.json")
        self.log(f"validation: mean foreground Dice {summary['foreground_mean']['Dice']:.4f} "
                 f"({json.dumps({k: round(v['Dice'], 4) for k, v in summary['mean'].items()})}) against {reference}")
        return summary

    def validation_reference(self) -> Path:
        """The folder of label maps (original geometry) the validation predictions are scored against."""
        return self.preprocessed_folder / "gt_segmentations"
