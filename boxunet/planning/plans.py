"""Plans as plain dataclasses, serialized to readable JSON (``boxunet_plans.json``).

Everything preprocessing and training need to reproduce a configuration is here.
"""
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

from boxunet.io.atomic import read_json, write_json
from boxunet.io.images import SPACING_OF_MISSING_AXIS
from boxunet.io.labels import Labels


@dataclass
class ArchitecturePlan:
    """A U-Net topology: one entry per resolution stage (stage 0 = full resolution)."""

    conv_dim: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]
    norm: str = "instance_norm"
    norm_kwargs: dict = field(default_factory=lambda: {"eps": 1e-5, "affine": True})
    nonlin: str = "leaky_relu"
    nonlin_kwargs: dict = field(default_factory=lambda: {"negative_slope": 0.01, "inplace": True})
    conv_bias: bool = True
    deep_supervision: bool = True

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)


@dataclass
class NormalizationPlan:
    """How one channel is normalized. ``scheme`` is one of ct, ct_window, zscore, rescale_0_1, none."""

    scheme: str
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    use_nonzero_mask: bool = False


@dataclass
class ResamplingPlan:
    """Interpolation orders and the anisotropy rule used when resampling this configuration."""

    data_order: int = 3
    seg_order: int = 1
    probabilities_order: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0


@dataclass
class ConfigurationPlan:
    """One configuration (2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres)."""

    name: str
    data_identifier: str
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_image_size_in_voxels: list[float]
    architecture: ArchitecturePlan
    batch_dice: bool
    resampling: ResamplingPlan = field(default_factory=ResamplingPlan)
    resample_out_of_plane: bool = True
    previous_stage: str | None = None
    next_stage: str | None = None
    inherits_from: str | None = None


@dataclass
class Plans:
    """The plans of one dataset."""

    dataset_name: str
    plans_name: str
    transpose_forward: list[int]
    transpose_backward: list[int]
    original_median_spacing_after_transp: list[float]
    original_median_shape_after_transp: list[float]
    normalization: list[NormalizationPlan]
    labels: dict
    box_labels: list[int]
    regions_class_order: list[int] | None
    num_input_channels: int
    gpu_memory_gb: float
    configurations: dict[str, ConfigurationPlan]
    foreground_intensity_properties_per_channel: dict
    planner: str = "boxunet.planning.planner"
    training_axis_codes: list[list[int]] = field(default_factory=list)  # the training images' orientations

    def configuration(self, name: str) -> ConfigurationPlan:
        """The configuration ``name``; a missing one raises an error listing the available ones."""
        from boxunet.errors import BoxunetError
        if name not in self.configurations:
            raise BoxunetError(f"configuration {name!r} is not in the plans of {self.dataset_name}; "
                               f"available: {sorted(self.configurations)}")
        return self.configurations[name]

    @property
    def images_are_2d(self) -> bool:
        """Whether the dataset's images are 2D (their missing axis has the placeholder spacing)."""
        return SPACING_OF_MISSING_AXIS in self.original_median_spacing_after_transp

    @cached_property
    def label_set(self) -> Labels:
        """What the labels stand for (values, regions, outputs, class names; boxunet.io.labels)."""
        return Labels.from_mapping(self.labels, self.regions_class_order, self.box_labels)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Plans":
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["normalization"] = [NormalizationPlan(**n) for n in data["normalization"]]
        values["configurations"] = {name: configuration_from_json(c) for name, c in data["configurations"].items()}
        return cls(**values)


def configuration_from_json(data: dict) -> ConfigurationPlan:
    """A ConfigurationPlan from its JSON form (``asdict``)."""
    values = {f.name: data[f.name] for f in fields(ConfigurationPlan) if f.name in data}
    values["architecture"] = ArchitecturePlan(**data["architecture"])
    values["resampling"] = ResamplingPlan(**data.get("resampling", {}))
    return ConfigurationPlan(**values)


def save_plans(plans: Plans, path: Path) -> None:
    """Write plans as indented JSON, atomically."""
    write_json(plans.to_json(), path)


def load_plans(path: Path) -> Plans:
    """Read plans written by ``save_plans``."""
    from boxunet.errors import BoxunetError
    if not Path(path).is_file():
        raise BoxunetError(f"file {path}: plans not found; run boxunet_plan_and_preprocess first")
    return Plans.from_json(read_json(path))
