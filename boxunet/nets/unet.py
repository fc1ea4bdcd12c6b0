"""The plain U-Net of an ``ArchitecturePlan`` (2D or 3D), with deep supervision.

Encoder stage ``i`` stacks ``n_conv_per_stage[i]`` conv -> norm -> nonlin blocks; its first conv has stride
``strides[i]`` (strided-conv downsampling). Decoder stage ``s`` (from ``n_stages - 2`` up to 0) upsamples
with a transposed conv (kernel = stride = ``strides[s + 1]``), concatenates the encoder skip of stage ``s``,
stacks ``n_conv_per_stage_decoder[s]`` blocks and has a 1x1 segmentation head.

Adding a head: ``forward`` is ``segment(decode(encode(x)))``. ``encode`` returns the encoder outputs of every
stage (the last one is the bottleneck), ``decode`` the decoder feature maps, highest resolution first. A
subclass (or a wrapper module) calls these and feeds e.g. ``skips[-1]`` to a classification/regression head
or ``decoder_features[0]`` to a second-step attention head, without touching the U-Net itself::

    class UNetWithClassifier(UNet):
        def __init__(self, architecture, num_input_channels, num_outputs, num_classes):
            super().__init__(architecture, num_input_channels, num_outputs)
            self.classifier = nn.Linear(architecture.features_per_stage[-1], num_classes)

        def forward(self, x):
            skips = self.encode(x)
            pooled = skips[-1].flatten(2).mean(-1)
            return self.segment(self.decode(skips)), self.classifier(pooled)
"""
import numpy as np
import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.planning.plans import ArchitecturePlan

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_ALL_CONVS = (*CONV.values(), *_TRANSPOSED_CONV.values())
_NORM = {
    "instance_norm": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch_norm": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
}
_NONLIN = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU}


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        raise BoxunetError(f"unknown {kind} {name!r} in the plans; supported: {sorted(table)}")
    return table[name]


class ConvBlock(nn.Sequential):
    """conv (padding kernel // 2) -> norm -> nonlin."""

    def __init__(self, architecture: ArchitecturePlan, in_channels: int, out_channels: int,
                 kernel_size: list[int], stride: list[int]):
        dim = architecture.conv_dim
        norm = _lookup(_NORM, architecture.norm, "norm")[dim]
        nonlin = _lookup(_NONLIN, architecture.nonlin, "nonlinearity")
        super().__init__(
            CONV[dim](in_channels, out_channels, tuple(kernel_size), tuple(stride),
                       padding=tuple(k // 2 for k in kernel_size), bias=architecture.conv_bias),
            norm(out_channels, **architecture.norm_kwargs),
            nonlin(**architecture.nonlin_kwargs))


def _stage(architecture: ArchitecturePlan, in_channels: int, out_channels: int, n_conv: int,
           kernel_size: list[int], stride: list[int]) -> nn.Sequential:
    ones = [1] * architecture.conv_dim
    return nn.Sequential(*[
        ConvBlock(architecture, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                  stride if i == 0 else ones)
        for i in range(n_conv)])


def init_he(module: nn.Module) -> None:
    """He (kaiming normal, a=0.01) init of conv and transposed-conv weights, zero biases."""
    if isinstance(module, _ALL_CONVS):
        nn.init.kaiming_normal_(module.weight, a=0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """Plain U-Net; ``forward`` returns a list of logits (highest resolution first) or one tensor.

    Decoder modules are indexed in decoding order: index ``j`` belongs to stage ``n_stages - 2 - j``.
    """

    def __init__(self, architecture: ArchitecturePlan, num_input_channels: int, num_outputs: int,
                 deep_supervision: bool = True):
        super().__init__()
        a = architecture
        if not (len(a.kernel_sizes) == len(a.strides) == len(a.n_conv_per_stage) == a.n_stages >= 2
                and len(a.n_conv_per_stage_decoder) == a.n_stages - 1):
            raise BoxunetError(f"inconsistent architecture plan (need >= 2 stages, one entry per stage "
                               f"and n_stages - 1 decoder entries): {a}")
        self.architecture = a
        self.num_outputs = num_outputs
        self.deep_supervision = deep_supervision
        features = a.features_per_stage
        self.encoder = nn.ModuleList(
            _stage(a, num_input_channels if i == 0 else features[i - 1], features[i], a.n_conv_per_stage[i],
                   a.kernel_sizes[i], a.strides[i])
            for i in range(a.n_stages))
        decoder_stages = range(a.n_stages - 2, -1, -1)
        self.upsample = nn.ModuleList(
            _TRANSPOSED_CONV[a.conv_dim](features[s + 1], features[s], tuple(a.strides[s + 1]),
                                         tuple(a.strides[s + 1]), bias=a.conv_bias)
            for s in decoder_stages)
        self.decoder = nn.ModuleList(
            _stage(a, 2 * features[s], features[s], a.n_conv_per_stage_decoder[s], a.kernel_sizes[s],
                   [1] * a.conv_dim)
            for s in decoder_stages)
        self.seg_heads = nn.ModuleList(CONV[a.conv_dim](features[s], num_outputs, 1) for s in decoder_stages)
        self.apply(init_he)

    def set_deep_supervision(self, enabled: bool) -> None:
        """Return all decoder outputs (True) or only the full-resolution logits (False)."""
        self.deep_supervision = enabled

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder outputs of every stage, stage 0 first; the last one is the bottleneck."""
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        return skips

    def decode(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder feature maps of stages 0 .. n_stages - 2, highest resolution first."""
        x = skips[-1]
        outputs = []
        for j, (upsample, stage) in enumerate(zip(self.upsample, self.decoder)):
            x = stage(torch.cat((upsample(x), skips[-2 - j]), dim=1))
            outputs.append(x)
        return outputs[::-1]

    def segment(self, decoder_features: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        """Segmentation logits: one per decoder stage with deep supervision, else the full-resolution one."""
        heads = self.seg_heads[::-1]
        if not self.deep_supervision:
            return heads[0](decoder_features[0])
        return [head(features) for head, features in zip(heads, decoder_features)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self.segment(self.decode(self.encode(x)))

    def feature_map_size(self, patch_size: list[int]) -> int:
        """Sum of output channels x output voxels over every (transposed) conv, all seg heads included.

        Computed from the modules' kernel, stride and padding for one sample; equals the planner's
        ``feature_map_estimate`` for a planned topology.
        """
        total = 0
        size = np.asarray(patch_size, dtype=np.int64)
        skip_sizes = []
        for stage in self.encoder:
            for block in stage:
                size, count = _conv_output(block[0], size)
                total += count
            skip_sizes.append(size)
        for j, (upsample, stage, head) in enumerate(zip(self.upsample, self.decoder, self.seg_heads)):
            size, count = _conv_output(upsample, size)
            if not np.array_equal(size, skip_sizes[-2 - j]):
                raise BoxunetError(f"patch size {list(patch_size)} is not divisible by the network's strides")
            total += count
            for block in stage:
                size, count = _conv_output(block[0], size)
                total += count
            total += _conv_output(head, size)[1]
        return int(total)


def _conv_output(conv: nn.Module, size: np.ndarray) -> tuple[np.ndarray, int]:
    """Output spatial size of ``conv`` for input ``size`` and its output channels x voxels."""
    kernel, stride, padding = (np.asarray(v) for v in (conv.kernel_size, conv.stride, conv.padding))
    if isinstance(conv, tuple(_TRANSPOSED_CONV.values())):
        size = (size - 1) * stride - 2 * padding + kernel
    else:
        size = (size + 2 * padding - kernel) // stride + 1
    return size, conv.out_channels * int(np.prod(size))


def build_network(architecture: ArchitecturePlan, num_input_channels: int, num_outputs: int,
                  deep_supervision: bool = True) -> UNet:
    """The U-Net of ``architecture`` for ``num_input_channels`` inputs and ``num_outputs`` output channels."""
    return UNet(architecture, num_input_channels, num_outputs, deep_supervision)


def deep_supervision_scales(architecture: ArchitecturePlan) -> list[list[float]]:
    """Per deep-supervision output (highest resolution first), its scale relative to the input per axis."""
    cumulative = np.cumprod(np.asarray(architecture.strides, dtype=np.float64), axis=0)
    return [[float(1 / c) for c in stage] for stage in cumulative[:-1]]
