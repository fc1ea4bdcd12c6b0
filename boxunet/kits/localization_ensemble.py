"""``KiTSLocalizationEnsemble``: seed 001's localization cascade with a label-assignment ensemble.

One ``boxunet_train DATASET 3d_fullres FOLD -tr KiTSLocalizationEnsemble`` trains four binary networks, each
a plans U-Net with a heatmap regression branch (boxunet.nets.regression) trained with Dice + CE and WMSE:

==================  =============  ==========================================  ===========================
stage               grid           foreground                                  heatmaps (WMSE)
==================  =============  ==========================================  ===========================
localization        coarse (x1/4)  every kidney label (kidney, tumor, cyst)    5 landmarks, sigma 3
kidney_and_tumor    roi            every kidney label                          boundary, sigma 3
kidney              roi            kidney                                      boundary, sigma 3
tumor               tumor          tumor                                       boundary, sigma 2
==================  =============  ==========================================  ===========================

(grids: boxunet.kits.grids; each stage's patch and network are planned for its grid). The stages train
in ``fold_X/<stage>/`` and resume there; the fold's ``checkpoint_final.pth`` holds all four networks and
their configurations, so ``boxunet_predict`` runs the whole pipeline per case:

1. the localization network on the case downsampled x4: its segmentation box, or its landmark box when
   their transverse widths disagree (boxunet.kits.localization), mapped back and expanded by 24/50/50 mm;
2. K_T, K and T on that region of interest (each averaged over the folds: same-type networks first);
3. T's mask keeps only 2D components of more than 64 voxels per slice; the labels are assigned by
   boxunet.kits.label_assignment and padded back to the whole image.

The prediction report gives per case where the region came from and its box.
"""
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from boxunet.cropping import mask_bbox
from boxunet.errors import BoxunetError
from boxunet.inference.sliding_window import predict_sliding_window
from boxunet.io.atomic import write_json
from boxunet.kits.components import remove_small_slice_components
from boxunet.kits.grids import coarse_shape, derive_grid, grid_configuration, grid_folder
from boxunet.kits.heatmaps import LANDMARKS, boundary_heatmap, landmark_heatmaps
from boxunet.kits.label_assignment import assign_labels
from boxunet.kits.localization import choose_box, landmark_box, scale_box
from boxunet.nets.regression import RegressionUNet
from boxunet.planning.plans import ConfigurationPlan, Plans, configuration_from_json
from boxunet.preprocessing.previous_stage import network_input_channels
from boxunet.preprocessing.resampling import resample_channels
from boxunet.training.checkpoint import load_checkpoint
from boxunet.training.data.augmentation import augmentation_parameters
from boxunet.training.distributed import barrier
from boxunet.training.losses import AuxiliaryHeadLoss, weighted_mse
from boxunet.training.registry import register_trainer
from boxunet.training.trainer import Trainer, result_options

FOREGROUND_THRESHOLD = 0.5
LABEL_LOGIT = 20.0  # softmax gives the assigned label a probability above 0.999 999


@dataclass(frozen=True)
class Stage:
    """One network of the pipeline: its grid, what it segments and which heatmaps it regresses."""

    name: str
    grid: str
    foreground: str  # "kidney_and_tumor", "kidney" or "tumor"
    heatmaps: str  # "landmarks" or "boundary"
    sigma: float

    @property
    def regression_channels(self) -> int:
        return len(LANDMARKS) if self.heatmaps == "landmarks" else 1


STAGES = (Stage("localization", "coarse", "kidney_and_tumor", "landmarks", 3.0),
          Stage("kidney_and_tumor", "roi", "kidney_and_tumor", "boundary", 3.0),
          Stage("kidney", "roi", "kidney", "boundary", 3.0),
          Stage("tumor", "tumor", "tumor", "boundary", 2.0))


def kits_label_values(labels: dict) -> dict[str, list[int]]:
    """``{"kidney_and_tumor": [...], "kidney": [k], "tumor": [t]}`` from plain dataset.json labels named kidney
    and tumor (case-insensitive); a clear error for anything else."""
    by_name = {str(name).lower(): value for name, value in labels.items()}
    plain = all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values())
    if not plain or not isinstance(by_name.get("kidney"), int) or not isinstance(by_name.get("tumor"), int):
        raise BoxunetError(f"KiTSLocalizationEnsemble needs plain integer labels named 'kidney' and 'tumor' in "
                           f"dataset.json, got {labels}; region-based (HEC) labels are not supported")
    everything = sorted(v for v in labels.values() if v != 0)
    return {"kidney_and_tumor": everything, "kidney": [by_name["kidney"]], "tumor": [by_name["tumor"]]}


class HeatmapLoss(nn.Module):
    """WMSE between predicted heatmaps and the heatmaps of the binary target, built per sample from the
    augmented full-resolution target (so targets and heatmaps always agree)."""

    def __init__(self, kind: str, sigma: float):
        super().__init__()
        self.kind, self.sigma = kind, sigma

    def targets(self, target: torch.Tensor) -> torch.Tensor:
        masks = target[:, 0].cpu().numpy() > 0
        make = ((lambda m: landmark_heatmaps(m, self.sigma)) if self.kind == "landmarks"
                else (lambda m: boundary_heatmap(m, self.sigma)))
        return torch.from_numpy(np.stack([make(mask) for mask in masks])).to(target.device)

    def forward(self, heatmaps: torch.Tensor, target: torch.Tensor, ignore_mask=None, voxel_weights=None):
        return weighted_mse(heatmaps, self.targets(target))


class StageTrainer(Trainer):
    """Trains one stage's binary multi-task network on its grid (see the module docstring)."""

    def __init__(self, stage: Stage, foreground_labels: list[int], *args, **kwargs):
        self.stage, self.foreground_labels = stage, foreground_labels
        super().__init__(*args, **kwargs)

    def build_network(self, plans: Plans, configuration: ConfigurationPlan, num_outputs: int) -> nn.Module:
        return RegressionUNet(configuration.architecture, network_input_channels(plans, configuration), num_outputs,
                              self.stage.regression_channels)

    def build_loss(self) -> nn.Module:
        return AuxiliaryHeadLoss(super().build_loss(), HeatmapLoss(self.stage.heatmaps, self.stage.sigma))

    def segmentation_outputs(self, outputs) -> list:
        return outputs[0]

    def loss_inputs(self, batch: dict):
        labels = torch.tensor(self.foreground_labels)
        targets = [torch.isin(t[:, :1], labels).long().to(self.device, non_blocking=True) for t in batch["target"]]
        return targets, None, None


class LocalizationEnsembleNetwork(nn.Module):
    """The four stage networks of one fold (a container: ``predict_case`` runs them)."""

    def __init__(self, plans: Plans, configurations: dict[str, ConfigurationPlan]):
        super().__init__()
        self.configurations = configurations
        self.kits_labels, self.label_values = kits_label_values(plans.labels), plans.label_values
        self.stages = nn.ModuleDict({
            stage.name: RegressionUNet(configurations[stage.name].architecture, plans.num_input_channels, 2,
                                       stage.regression_channels) for stage in STAGES})

    def set_deep_supervision(self, enabled: bool) -> None:
        for network in self.stages.values():
            network.set_deep_supervision(enabled)


def _foreground_probability(networks, name: str, data: torch.Tensor, regression_channels: int, mirroring: bool,
                            step_size: float, device, precision) -> tuple[np.ndarray, np.ndarray]:
    """Fold-averaged foreground probability and heatmaps of stage ``name`` on ``data``."""
    configuration = networks[0].configurations[name]
    mirror_axes = tuple(augmentation_parameters(configuration.patch_size)["mirror_axes"]) if mirroring else ()
    output = predict_sliding_window([n.stages[name] for n in networks], data, configuration.patch_size,
                                    2 + regression_channels, step_size=step_size, mirror_axes=mirror_axes,
                                    device=device, precision=precision)
    return torch.softmax(output[:2], 0)[1].numpy(), output[2:].numpy()


def predict_case(networks: list[LocalizationEnsembleNetwork], data: torch.Tensor, spacing, labels: dict[str, list[int]],
                 mirroring: bool, step_size: float, device, precision) -> tuple[np.ndarray, dict]:
    """The label map of one preprocessed case ``(C, *shape)`` by the pipeline, and where its region came from."""
    shape = tuple(data.shape[1:])
    run = {"mirroring": mirroring, "step_size": step_size, "device": device, "precision": precision}
    coarse = torch.from_numpy(resample_channels(data.numpy(), coarse_shape(shape), order=1))
    located, heatmaps = _foreground_probability(networks, "localization", coarse, len(LANDMARKS), **run)
    located = located > FOREGROUND_THRESHOLD
    box, source = choose_box(mask_bbox(located) if located.any() else None, landmark_box(heatmaps))
    roi = scale_box(box, coarse.shape[1:], shape, spacing) if box else [[0, s] for s in shape]
    region = tuple(slice(lo, hi) for lo, hi in roi)
    crop = data[(slice(None), *region)].contiguous()
    masks = {name: _foreground_probability(networks, name, crop, 1, **run)[0] > FOREGROUND_THRESHOLD
             for name in ("kidney_and_tumor", "kidney", "tumor")}
    tumor = remove_small_slice_components(masks["tumor"])
    result = np.zeros(shape, dtype=np.uint8)
    result[region] = assign_labels(masks["kidney_and_tumor"], masks["kidney"], tumor, labels["kidney"][0],
                                   labels["tumor"][0])
    return result, {"roi_source": source, "roi": roi}


@register_trainer
class KiTSLocalizationEnsemble(Trainer):
    """Seed 001's pipeline for one fold (see the module docstring)."""

    def __init__(self, plans: Plans, configuration: ConfigurationPlan, *args, **kwargs):
        self.kits_labels = kits_label_values(plans.labels)
        if configuration.architecture.conv_dim != 3 or configuration.previous_stage:
            raise BoxunetError(f"KiTSLocalizationEnsemble runs on a 3D configuration without previous stage "
                               f"(e.g. 3d_fullres), not {configuration.name}")
        self.stage_configurations = None
        super().__init__(plans, configuration, *args, **kwargs)

    def build_network(self, plans: Plans, configuration: ConfigurationPlan, num_outputs: int) -> nn.Module:
        if self.stage_configurations is None:
            self.stage_configurations = self._prepare_grids()
        return LocalizationEnsembleNetwork(plans, self.stage_configurations)

    @classmethod
    def network_from_checkpoint(cls, plans: Plans, configuration: ConfigurationPlan, state: dict) -> nn.Module:
        configurations = {name: configuration_from_json(c) for name, c in state["stage_configurations"].items()}
        return LocalizationEnsembleNetwork(plans, configurations)

    @classmethod
    def predict_preprocessed(cls, networks, data, configuration, num_outputs, mirror_axes, step_size, device,
                             precision):
        """The pipeline's label map as logits: ``LABEL_LOGIT`` for the assigned label, 0 for the others (mirroring
        TTA on when ``mirror_axes`` is not empty, each network with its own axes)."""
        labels, details = predict_case(networks, data, configuration.spacing, networks[0].kits_labels,
                                       bool(mirror_axes), step_size, device, precision)
        values = networks[0].label_values
        logits = torch.from_numpy(labels[None] == np.asarray(values).reshape(-1, *[1] * labels.ndim)).float()
        return logits * LABEL_LOGIT, details

    def perform_validation(self) -> dict | None:
        self.network.set_deep_supervision(False)  # the pipeline predicts with the full-resolution outputs only
        return super().perform_validation()

    def state(self) -> dict:
        return dict(super().state(), stage_configurations={k: asdict(v) for k, v in self.stage_configurations.items()})

    # ---------------------------------------------------------------------------------- training
    def _same_run(self, checkpoint: Path) -> bool:
        return checkpoint.is_file() and result_options(load_checkpoint(checkpoint)["options"]) == \
            result_options(self.options)

    def _train_stage(self, stage: Stage) -> Path:
        """Train stage ``stage`` in ``fold_X/<stage>/`` unless it was trained with these options (resuming an
        interrupted run of them); return its final checkpoint."""
        folder = self.output_folder / stage.name
        final = folder / "checkpoint_final.pth"
        if self._same_run(final):
            return final
        folder.mkdir(parents=True, exist_ok=True)
        trainer = StageTrainer(stage, self.kits_labels[stage.foreground],
                               replace(self.plans, labels={"background": 0, stage.foreground: 1},
                                       regions_class_order=None),
                               self.stage_configurations[stage.name], self.fold, self.preprocessed_folder, folder,
                               self.train_cases, self.val_cases, self.options, self.group)
        if self._same_run(folder / "checkpoint_latest.pth"):
            trainer.load(folder / "checkpoint_latest.pth")
        if self.log:
            self.log(f"stage {stage.name}: patch {self.stage_configurations[stage.name].patch_size} on the "
                     f"{stage.grid} grid, from epoch {trainer.current_epoch}")
        trainer.run_training()
        return final

    def _prepare_grids(self) -> dict[str, ConfigurationPlan]:
        """Derive the three grids of this fold's cases (main process; the others wait) and plan each stage."""
        cases = self.train_cases + self.val_cases
        arguments = (self.kits_labels["kidney_and_tumor"], self.kits_labels["tumor"][0])
        grids = {stage.grid for stage in STAGES}
        if self.group.is_main:
            for grid in sorted(grids):
                derive_grid(self.preprocessed_folder, self.configuration, grid, cases, *arguments)
        barrier(self.group)
        planned = {grid: grid_configuration(self.plans, self.configuration, grid,
                                            grid_folder(self.preprocessed_folder, self.configuration, grid),
                                            self.train_cases) for grid in grids}
        return {stage.name: planned[stage.grid] for stage in STAGES}

    def run_training(self) -> None:
        """Train (or resume, or reuse) the four stages, then store them together as this fold's checkpoints."""
        for stage in STAGES:
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
