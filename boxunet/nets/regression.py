"""A U-Net with a heatmap regression branch ([Zhang 2019]'s multi-task networks).

The branch (conv -> norm -> nonlin, then a 1x1 conv and a sigmoid) reads the full-resolution decoder features
that the segmentation head reads, and regresses ``regression_channels`` heatmaps in [0, 1] (landmarks or
boundaries, boxunet.kits.heatmaps). In training mode the network returns ``(outputs, heatmaps)`` with
``outputs`` the U-Net's deep-supervision list; in inference mode it returns the segmentation logits and the
heatmaps concatenated along the channels (``num_outputs + regression_channels``), so one sliding window
predicts both.
"""
import torch
from torch import nn

from boxunet.nets.unet import CONV, ConvBlock, UNet, init_he
from boxunet.planning.plans import ArchitecturePlan


class RegressionUNet(UNet):
    """The plans' U-Net plus a heatmap regression branch on its full-resolution decoder features."""

    def __init__(self, architecture: ArchitecturePlan, num_input_channels: int, num_outputs: int,
                 regression_channels: int, deep_supervision: bool = True):
        super().__init__(architecture, num_input_channels, num_outputs, deep_supervision)
        features = architecture.features_per_stage[0]
        self.regression = nn.Sequential(
            ConvBlock(architecture, features, features, architecture.kernel_sizes[0], [1] * architecture.conv_dim),
            CONV[architecture.conv_dim](features, regression_channels, 1))
        self.regression.apply(init_he)

    def forward(self, x: torch.Tensor):
        decoder_features = self.decode(self.encode(x))
        segmentation = self.segment(decoder_features)
        heatmaps = torch.sigmoid(self.regression(decoder_features[0]))
        if self.deep_supervision:
            return segmentation, heatmaps
        return torch.cat([segmentation, heatmaps.to(segmentation.dtype)], dim=1)
