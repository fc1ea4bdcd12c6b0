"""Turn a dataset fingerprint into plans for 2d, 3d_fullres, 3d_lowres and 3d_cascade_fullres."""
from pathlib import Path

import numpy as np

from boxunet.errors import BoxunetError
from boxunet.io.dataset_json import DatasetDescription
from boxunet.paths import PLANS_FILE_NAME, checked_name
from boxunet.planning.normalization import plan_normalization
from boxunet.planning.patch_size import PatchPlan, plan_patch_and_batch
from boxunet.planning.plans import ArchitecturePlan, ConfigurationPlan, Plans
from boxunet.planning.spacing import target_spacing, transpose_for

DEFAULT_PLANS_NAME = "boxunetPlans"
DEFAULT_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
LOWRES_MIN_PATCH_COVERAGE = 0.25
LOWRES_SPACING_STEP = 1.03
LOWRES_MIN_VOXEL_RATIO = 2.0
LOWRES_MAX_STEPS = 500


def plans_file(preprocessed_dataset_folder: Path, plans_name: str) -> Path:
    """The plans file of ``plans_name`` in a preprocessed dataset folder (the default name: boxunet_plans.json)."""
    checked_name(plans_name, "plans name")
    return Path(preprocessed_dataset_folder) / (PLANS_FILE_NAME if plans_name == DEFAULT_PLANS_NAME
                                                else f"{plans_name}.json")


def _median_shape_at(spacing: np.ndarray, spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    return np.median(shapes * spacings / spacing, axis=0)


def configuration_plan(name: str, identifier: str, spacing, median_shape, patch: PatchPlan, batch_dice: bool,
                       resample_out_of_plane: bool = True) -> ConfigurationPlan:
    """The configuration ``name`` (data in folder ``identifier``) at ``spacing`` with the network of ``patch``."""
    topology = patch.topology
    architecture = ArchitecturePlan(
        conv_dim=len(spacing), features_per_stage=patch.features, kernel_sizes=topology.kernel_sizes,
        strides=topology.strides, n_conv_per_stage=[2] * topology.n_stages,
        n_conv_per_stage_decoder=[2] * (topology.n_stages - 1))
    return ConfigurationPlan(
        name=name, data_identifier=identifier, spacing=[float(s) for s in spacing],
        patch_size=list(topology.patch_size), batch_size=patch.batch_size,
        median_image_size_in_voxels=[float(round(s, 1)) for s in median_shape], architecture=architecture,
        batch_dice=batch_dice, resample_out_of_plane=resample_out_of_plane)


def _plan_lowres(fullres_spacing: np.ndarray, spacings: np.ndarray, shapes: np.ndarray, num_classes: int,
                 memory_gb: float, dataset_voxels: float, forced: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, PatchPlan] | None:
    """Coarsen the spacing in 3 % steps (only the finer axes while one is over twice as coarse) until a patch
    covers ``LOWRES_MIN_PATCH_COVERAGE`` of the median image; ``forced`` also waits until the median image
    has ``LOWRES_MIN_VOXEL_RATIO`` times fewer voxels than at full resolution."""
    spacing = fullres_spacing.copy()
    fullres_voxels = np.prod(_median_shape_at(fullres_spacing, spacings, shapes))
    for _ in range(LOWRES_MAX_STEPS):
        coarse_limited = spacing.max() / spacing > 2
        spacing = spacing * np.where(coarse_limited, LOWRES_SPACING_STEP, 1.0) if coarse_limited.any() \
            else spacing * LOWRES_SPACING_STEP
        median_shape = _median_shape_at(spacing, spacings, shapes)
        voxels = dataset_voxels * np.prod(fullres_spacing / spacing)
        patch = plan_patch_and_batch(spacing.tolist(), median_shape.tolist(), num_classes, memory_gb, voxels)
        coarse_enough = not forced or fullres_voxels / np.prod(median_shape) >= LOWRES_MIN_VOXEL_RATIO
        if np.prod(patch.topology.patch_size) / np.prod(median_shape) >= LOWRES_MIN_PATCH_COVERAGE and coarse_enough:
            return spacing, median_shape, patch
    return None


def plan_experiment(fingerprint: dict, description: DatasetDescription, dataset_name: str,
                    memory_gb: float = 8.0, ct_window: tuple[float, float] | None = None,
                    target_spacing_override: list[float] | None = None,
                    plans_name: str = DEFAULT_PLANS_NAME, force_cascade: bool = False) -> Plans:
    """Plans for every configuration, from the fingerprint and the dataset description.

    3d_lowres and 3d_cascade_fullres are planned when a 3d_fullres patch covers less than a quarter of the
    median image (nnU-Net's rule), or always with ``force_cascade`` (the lowres stage then has at most half
    the voxels of full resolution).
    """
    if memory_gb <= 0:
        raise BoxunetError(f"--gpu-memory-gb must be positive, got {memory_gb}")
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    fullres = np.asarray(target_spacing_override if target_spacing_override is not None
                         else target_spacing(spacings.tolist(), shapes.tolist()), dtype=np.float64)
    if fullres.shape != (spacings.shape[1],):
        raise BoxunetError(f"target spacing {fullres.tolist()} must have {spacings.shape[1]} values (z y x)")
    forward, backward = transpose_for(fullres.tolist())
    spacings, shapes, fullres = spacings[:, forward], shapes[:, forward], fullres[forward]
    median_shape = _median_shape_at(fullres, spacings, shapes)
    dataset_voxels = float(np.sum(np.prod(shapes * spacings / fullres, axis=1)))
    num_classes = description.label_set.num_outputs

    full_patch = plan_patch_and_batch(fullres.tolist(), median_shape.tolist(), num_classes, memory_gb, dataset_voxels)
    configurations = {}
    lowres = None
    if force_cascade or np.prod(full_patch.topology.patch_size) / np.prod(median_shape) < LOWRES_MIN_PATCH_COVERAGE:
        lowres = _plan_lowres(fullres, spacings, shapes, num_classes, memory_gb, dataset_voxels, force_cascade)
        if lowres is not None and np.prod(median_shape) / np.prod(lowres[1]) < LOWRES_MIN_VOXEL_RATIO:
            lowres = None
        if lowres is None and force_cascade:
            raise BoxunetError(f"--cascade: no 3d_lowres spacing within {LOWRES_MAX_STEPS} steps gives a patch covering "
                               f"{LOWRES_MIN_PATCH_COVERAGE:.0%} of the median image with half the voxels")

    plane_patch = plan_patch_and_batch(fullres[1:].tolist(), median_shape[1:].tolist(), num_classes, memory_gb,
                                       dataset_voxels)
    configurations["2d"] = configuration_plan("2d", f"{plans_name}_2d", fullres[1:], median_shape[1:], plane_patch,
                                          batch_dice=True, resample_out_of_plane=False)
    configurations["3d_fullres"] = configuration_plan("3d_fullres", f"{plans_name}_3d_fullres", fullres, median_shape,
                                                  full_patch, batch_dice=lowres is not None)
    if lowres is not None:
        low_spacing, low_shape, low_patch = lowres
        configurations["3d_lowres"] = configuration_plan("3d_lowres", f"{plans_name}_3d_lowres", low_spacing, low_shape,
                                                     low_patch, batch_dice=False)
        configurations["3d_lowres"].next_stage = "3d_cascade_fullres"
        cascade = configuration_plan("3d_cascade_fullres", f"{plans_name}_3d_fullres", fullres, median_shape,
                                 full_patch, batch_dice=True)
        cascade.previous_stage = "3d_lowres"
        cascade.inherits_from = "3d_fullres"
        configurations["3d_cascade_fullres"] = cascade

    return Plans(
        dataset_name=dataset_name, plans_name=plans_name, transpose_forward=forward, transpose_backward=backward,
        original_median_spacing_after_transp=np.median(spacings, axis=0).tolist(),
        original_median_shape_after_transp=np.median(shapes, axis=0).tolist(),
        normalization=plan_normalization(description.channel_names, fingerprint, ct_window),
        labels=description.to_json()["labels"], box_labels=list(description.box_labels),
        regions_class_order=description.regions_class_order, num_input_channels=description.num_channels,
        gpu_memory_gb=memory_gb, configurations=configurations,
        foreground_intensity_properties_per_channel=fingerprint["foreground_intensity_properties_per_channel"],
        training_axis_codes=[list(codes) for codes in fingerprint.get("axis_codes", [])])


def plans_summary(plans: Plans) -> str:
    """A short human-readable summary of the plans, one block per configuration."""
    lines = [f"plans {plans.plans_name} for {plans.dataset_name} (memory budget {plans.gpu_memory_gb:g} GB, "
             f"transpose {plans.transpose_forward})"]
    for index, normalization in enumerate(plans.normalization):
        lines.append(f"  channel {index}: normalization {normalization.scheme}")
    for name, configuration in plans.configurations.items():
        architecture = configuration.architecture
        lines.append(f"  {name}: spacing {[round(s, 3) for s in configuration.spacing]}, "
                     f"median size {[int(round(s)) for s in configuration.median_image_size_in_voxels]}, "
                     f"patch {configuration.patch_size}, batch {configuration.batch_size}, "
                     f"{architecture.n_stages} stages, features {architecture.features_per_stage[0]}.."
                     f"{architecture.features_per_stage[-1]}"
                     + (f", previous stage {configuration.previous_stage}" if configuration.previous_stage else ""))
    return "\n".join(lines)
