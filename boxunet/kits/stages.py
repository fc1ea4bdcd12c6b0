"""What the KiTS pipelines share: their stages (one binary network each, on a derived grid), the trainer of a
stage, the container of a fold's stage networks, and ``KiTSPipeline``, the trainer of a whole pipeline.

A pipeline (``KiTSLocalizationEnsemble``, ``KiTSCoarseToFine``) lists its ``stages`` and defines
``predict_case``. ``boxunet_train ... -tr <pipeline>`` derives the grids of the fold's cases
(boxunet.kits.grids), plans each stage's patch and network on its grid, trains the stages one after the other
in ``fold_X/<stage>/`` (an interrupted stage resumes; a stage finished with the same options is reused) and
stores them together in the fold's ``checkpoint_final.pth`` with their configurations, from which
``boxunet_predict`` rebuilds and runs the pipeline.
"""
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.evaluation.kits import kits_regions
from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.atomic import write_json
from boxunet.io.checkpoint import load_checkpoint
from boxunet.kits.grids import derive_grid, derived_case_ids, grid_configuration, grid_folder
from boxunet.kits.heatmaps import LANDMARKS, boundary_heatmap, landmark_heatmaps
from boxunet.nets.regression import RegressionUNet
from boxunet.nets.unet import build_network
from boxunet.planning.plans import ConfigurationPlan, Plans, configuration_from_json
from boxunet.preprocessing.storage import finished_case_signature
from boxunet.training.data.augmentation import augmentation_parameters
from boxunet.training.data.sampler import ClassBalancedSampler
from boxunet.training.distributed import barrier
from boxunet.training.losses import AuxiliaryHeadLoss, weighted_mse
from boxunet.training.options import result_options
from boxunet.training.trainer import Trainer

FOREGROUND_THRESHOLD = 0.5
LABEL_LOGIT = 20.0  # the assigned label gets a probability above 0.999 999 (softmax and sigmoid)


def kits_label_values(labels: dict, source: str = "dataset.json") -> dict[str, list[int]]:
    """``{"kidney_and_tumor": [...], "kidney": [k], "tumor": [t]}`` of KiTS labels: plain labels named kidney and
    tumor (KiTS19; a cyst label joins kidney_and_tumor), or the KiTS21/23 regions (``kidney: [1, 2, 3],
    masses: [2, 3], tumor: 2``, kidney proper being the kidney value outside the masses). A clear error
    naming ``source`` for anything else."""
    regions = kits_regions(labels)
    proper = [v for v in regions["kidney_and_masses"] if v not in regions["masses"]] if regions else []
    if len(proper) != 1:
        raise BoxunetError(f"file {source}: the KiTS pipelines need KiTS labels (kidney and tumor, optionally cyst, "
                           f"as in KiTS19, or the KiTS21/23 regions), got {labels}")
    return {"kidney_and_tumor": list(regions["kidney_and_masses"]), "kidney": proper,
            "tumor": list(regions["tumor"])}


@dataclass(frozen=True)
class Stage:
    """One binary network of a pipeline: its grid, what it segments, and its options."""

    name: str
    grid: str
    foreground: str  # a key of kits_label_values: "kidney_and_tumor", "kidney" or "tumor"
    heatmaps: str | None = None  # a regression branch: "landmarks" or "boundary" (WMSE)
    sigma: float = 0.0
    centre_classes: tuple[str, ...] = ()  # class-balanced patch centres on these label groups (else nnU-Net's)
    kidney_mask_input: bool = False  # a second input channel: the kidney mask (kidney_and_tumor)
    conv_dim: int = 3

    @property
    def regression_channels(self) -> int:
        return {"landmarks": len(LANDMARKS), "boundary": 1}.get(self.heatmaps, 0)

    @classmethod
    def from_json(cls, data: dict) -> "Stage":
        """A stage from its ``asdict`` form (as a checkpoint records it)."""
        return cls(**dict(data, centre_classes=tuple(data["centre_classes"])))

    def network(self, architecture, input_channels: int) -> nn.Module:
        """The stage's network (two outputs: background, foreground)."""
        channels = input_channels + int(self.kidney_mask_input)
        if self.heatmaps:
            return RegressionUNet(architecture, channels, 2, self.regression_channels)
        return build_network(architecture, channels, 2)


class HeatmapLoss(nn.Module):
    """WMSE between predicted heatmaps and the heatmaps of the binary target, built per sample from the
    augmented full-resolution target (so targets and heatmaps always agree)."""

    def __init__(self, kind: str, sigma: float):
        super().__init__()
        self.kind, self.sigma = kind, sigma

    def targets(self, target: torch.Tensor) -> torch.Tensor:
        masks = target[:, 0].cpu().numpy() > 0
        make = landmark_heatmaps if self.kind == "landmarks" else boundary_heatmap
        return torch.from_numpy(np.stack([make(mask, self.sigma) for mask in masks])).to(target.device)

    def forward(self, heatmaps: torch.Tensor, target: torch.Tensor, ignore_mask=None, voxel_weights=None):
        return weighted_mse(heatmaps, self.targets(target))


class StageTrainer(Trainer):
    """Trains one stage's binary network on its grid's derived cases."""

    def __init__(self, stage: Stage, kits_labels: dict[str, list[int]], identity: dict, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage, self.kits_labels, self.identity = stage, kits_labels, identity

    def network_settings(self) -> dict:
        return {"stage_identity": self.identity}  # also what a stored stage network must match to be reused

    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int,
                      settings: Mapping) -> nn.Module:
        stage = Stage.from_json(settings["stage_identity"]["stage"])
        return stage.network(configuration.architecture, plans.num_input_channels)

    def build_loss(self) -> nn.Module:
        loss = super().build_loss()
        return AuxiliaryHeadLoss(loss, HeatmapLoss(self.stage.heatmaps, self.stage.sigma)) if self.stage.heatmaps \
            else loss

    def segmentation_outputs(self, outputs) -> list:
        return outputs[0] if self.stage.heatmaps else outputs

    def loss_inputs(self, batch: dict):
        foreground = torch.tensor(self.kits_labels[self.stage.foreground])
        targets = [torch.isin(t[:, :1], foreground).long().to(self.device, non_blocking=True) for t in batch["target"]]
        return targets, None, None

    def batch_input(self, batch: dict) -> torch.Tensor:
        data = super().batch_input(batch)
        if not self.stage.kidney_mask_input:
            return data
        kidney = torch.isin(batch["target"][0][:, :1], torch.tensor(self.kits_labels["kidney_and_tumor"]))
        return torch.cat([data, kidney.to(data.device, data.dtype)], dim=1)

    def sampler_options(self, targets: Path | None) -> dict:
        if not self.stage.centre_classes:
            return {}
        classes = [v for group in self.stage.centre_classes for v in self.kits_labels[group]]
        return {"sampler_class": ClassBalancedSampler, "sampler_arguments": {"centre_classes": classes}}


class StageNetworks(nn.Module):
    """A fold's stage networks with their configurations (a container; the pipeline's ``predict_case`` runs
    them) and what the plans' output channels stand for."""

    def __init__(self, plans: Plans, stages: tuple[Stage, ...], configurations: dict[str, ConfigurationPlan]):
        super().__init__()
        self.configurations = configurations
        self.kits_labels = kits_label_values(plans.labels)
        self.output_values = plans.label_set.output_values
        self.stages = nn.ModuleDict({stage.name: stage.network(configurations[stage.name].architecture,
                                                               plans.num_input_channels) for stage in stages})

    def set_deep_supervision(self, enabled: bool) -> None:
        for network in self.stages.values():
            network.set_deep_supervision(enabled)


@dataclass
class PredictionRun:
    """How the stage networks predict (the prediction settings, shared by every stage)."""

    mirroring: bool
    step_size: float
    device: torch.device
    precision: str


def stage_prediction(networks: list[StageNetworks], stage: Stage, data: torch.Tensor,
                     run: PredictionRun) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``(*shape)`` and heatmaps ``(R, *shape)`` of ``stage`` on ``data`` ``(C, *shape)``,
    the folds' logits averaged (each stage mirrors along its own patch's axes)."""
    configuration = networks[0].configurations[stage.name]
    mirror_axes = tuple(augmentation_parameters(configuration.patch_size)["mirror_axes"]) if run.mirroring else ()
    output = predict_sliding_window([n.stages[stage.name] for n in networks], data, configuration.patch_size,
                                    2 + stage.regression_channels, step_size=run.step_size, mirror_axes=mirror_axes,
                                    device=run.device, precision=run.precision)
    return torch.softmax(output[:2], 0)[1].numpy(), output[2:].numpy()


def stage_mask(networks: list[StageNetworks], stage: Stage, data: torch.Tensor, run: PredictionRun) -> np.ndarray:
    """``stage``'s foreground mask on ``data`` (probability above ``FOREGROUND_THRESHOLD``)."""
    return stage_prediction(networks, stage, data, run)[0] > FOREGROUND_THRESHOLD


class KiTSPipeline(Trainer):
    """The trainer of a pipeline of ``stages`` (see the module docstring); subclasses define both."""

    stages: tuple[Stage, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kits_labels = kits_label_values(self.plans.labels, str(self.folders.preprocessed / "dataset.json"))
        if self.configuration.architecture.conv_dim != 3 or self.configuration.previous_stage:
            raise BoxunetError(f"{type(self).__name__} runs on a 3D configuration without previous stage "
                               f"(e.g. 3d_fullres), not {self.configuration.name}")
        self.stage_configurations, self.stage_cases, self.stage_identities = None, None, None

    def initialize(self) -> None:
        """Derive the grids and plan the stages (``_prepare_grids``), then build."""
        self._prepare_grids()
        super().initialize()

    @classmethod
    def predict_case(cls, networks: list[StageNetworks], data: torch.Tensor, spacing: list[float],
                     run: PredictionRun) -> tuple[np.ndarray, dict]:
        """The label map of one preprocessed case ``(C, *shape)`` at ``spacing`` and its report details."""
        raise NotImplementedError(f"{cls.__name__} does not define predict_case")

    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int,
                      settings: Mapping) -> nn.Module:
        configurations = {name: configuration_from_json(c) for name, c in settings["stage_configurations"].items()}
        return StageNetworks(plans, cls.stages, configurations)

    def network_settings(self) -> dict:
        return {"stage_configurations": {name: asdict(c) for name, c in self.stage_configurations.items()}}

    @classmethod
    def predict_preprocessed(cls, networks, data, configuration, num_outputs, mirror_axes, step_size, device,
                             precision):
        """The pipeline's label map as logits: ``LABEL_LOGIT`` where the assigned label belongs to an output
        channel's label or region, ``-LABEL_LOGIT`` elsewhere (mirroring TTA on when ``mirror_axes`` is not
        empty, each stage with its own axes)."""
        labels, details = cls.predict_case(networks, data, configuration.spacing,
                                           PredictionRun(bool(mirror_axes), step_size, device, precision))
        inside = np.stack([np.isin(labels, values) for values in networks[0].output_values])
        return torch.from_numpy(np.where(inside, LABEL_LOGIT, -LABEL_LOGIT).astype(np.float32)), details

    def _wrap_network(self) -> nn.Module:
        return self.network  # the pipeline trains its stages, never this container (no DDP, no compile)

    def load(self, path: Path, weights_only: bool = False) -> None:
        """Restore a pipeline checkpoint with the stage configurations it was trained with."""
        state = load_checkpoint(path)
        recorded = {name: configuration_from_json(c) for name, c in state["stage_configurations"].items()}
        if recorded != self.stage_configurations:
            self.stage_configurations = recorded
            self.network = self.build_network(self.plans, self.configuration, self.num_outputs, state).to(self.device)
            self.optimizer, self.training_network = self.build_optimizer(), self.network
        super().load(path, weights_only)

    def perform_validation(self) -> dict | None:
        self.network.set_deep_supervision(False)  # the pipeline predicts with the full-resolution outputs only
        return super().perform_validation()

    def _prepare_grids(self) -> None:
        """Derive the grids of this fold's cases (main process; the others wait), list each stage's derived
        training and validation cases and plan its network."""
        grids = sorted({stage.grid for stage in self.stages})
        if self.group.is_main:
            for grid in grids:
                derive_grid(self.folders.preprocessed, self.configuration, grid, self.train_cases + self.val_cases,
                            self.kits_labels)
        barrier(self.group)
        self.stage_configurations, self.stage_cases, self.stage_identities = {}, {}, {}
        for stage in self.stages:
            folder = grid_folder(self.folders.preprocessed, self.configuration, stage.grid)
            train, val = derived_case_ids(folder, self.train_cases), derived_case_ids(folder, self.val_cases)
            configuration = grid_configuration(self.plans, self.configuration, folder, train, stage.conv_dim)
            self.stage_cases[stage.name], self.stage_configurations[stage.name] = (train, val), configuration
            # what a stored stage network must have been trained on to be reused
            self.stage_identities[stage.name] = {
                "stage": asdict(stage), "configuration": asdict(configuration), "labels": self.kits_labels,
                "cases": {case: finished_case_signature(folder, case) for case in train + val}}

    def _same_run(self, checkpoint: Path, stage: Stage) -> bool:
        """Whether ``checkpoint`` is of ``stage`` trained with these options, on these cases and grid."""
        if not checkpoint.is_file():
            return False
        state = load_checkpoint(checkpoint)
        return result_options(state["options"]) == result_options(self.options) and \
            state.get("stage_identity") == self.stage_identities[stage.name]

    def _train_stage(self, stage: Stage) -> Path:
        """Train ``stage`` in ``fold_X/<stage>/`` unless it was trained with these options (resuming an
        interrupted run of them); return its final checkpoint."""
        folder = self.output_folder / stage.name
        final = folder / "checkpoint_final.pth"
        if self._same_run(final, stage):
            return final
        folder.mkdir(parents=True, exist_ok=True)
        stage_plans = replace(self.plans, labels={"background": 0, stage.foreground: 1}, regions_class_order=None)
        train, val = self.stage_cases[stage.name]
        setup = replace(self.setup, plans=stage_plans, configuration=self.stage_configurations[stage.name],
                        train_cases=train, val_cases=val, output=folder)
        trainer = StageTrainer(stage, self.kits_labels, self.stage_identities[stage.name], setup, self.options,
                               self.group)
        trainer.initialize()
        if self._same_run(folder / "checkpoint_latest.pth", stage):
            trainer.load(folder / "checkpoint_latest.pth")
        if self.log:
            self.log(f"stage {stage.name}: patch {self.stage_configurations[stage.name].patch_size} on the "
                     f"{stage.grid} grid ({len(train)} training cases), from epoch {trainer.current_epoch}")
        trainer.run_training()
        return final

    def run_training(self) -> None:
        """Train (or resume, or reuse) every stage, then store them together as this fold's checkpoints."""
        if self.group.is_main:
            self._write_debug()
        for stage in self.stages:
            final = self._train_stage(stage)
            weights = load_checkpoint(final, map_location=self.device)["network_weights"]
            self.network.stages[stage.name].load_state_dict(weights)
        self.current_epoch = self.options.epochs
        if self.group.is_main:
            write_json({name: asdict(c) for name, c in self.stage_configurations.items()},
                       self.output_folder / "stage_configurations.json")
            self.save("checkpoint_final.pth")
            self.save("checkpoint_latest.pth")
        barrier(self.group)
