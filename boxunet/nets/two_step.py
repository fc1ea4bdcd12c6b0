"""The 2-step attention head of [Pan 2019] (Eq. 1) on the plans' U-Net.

From the full-resolution decoder features X, a binary classifier Phi_1 (1x1 conv, background vs. kidney and
tumor) and a feature block F (conv -> norm -> nonlin, 32 channels) are computed side by side; the
foreground probability p = softmax(Phi_1(X))[1] multiplies F, and the final classifier Phi_2 (1x1 conv) gives
the output classes (background / kidney / tumor, or the plans' regions) from ``p * F + F``:

    Y = Phi_2(p * F(X) + F(X))

The lower-resolution deep-supervision outputs keep the U-Net's plain heads. In training mode the network
returns ``(outputs, binary_logits)``: ``outputs`` is the U-Net's list (Y first) and ``binary_logits`` the
two-channel Phi_1 logits at full resolution; with deep supervision off it returns Y alone, so prediction
treats it like any U-Net.

With ``num_case_classes`` the network also classifies patches ([Pan 2019]'s classification branch): the
bottleneck features, averaged over space, go through a linear layer to ``1 + num_case_classes`` logits (0:
the patch holds none of the classified structure, then one per case class). In training mode it then
returns ``((outputs, binary_logits), class_logits)``; ``classify(x)`` gives the class logits alone.
"""
import torch
from torch import nn

from boxunet.nets.unet import CONV, ConvBlock, UNet, init_he
from boxunet.planning.plans import ArchitecturePlan

ATTENTION_CHANNELS = 32


class TwoStepHead(nn.Module):
    """``Y = Phi_2(p * F(X) + F(X))`` with ``p`` the foreground probability of ``Phi_1(X)``; returns (Y, Phi_1(X))."""

    def __init__(self, architecture: ArchitecturePlan, in_channels: int, num_outputs: int,
                 attention_channels: int = ATTENTION_CHANNELS):
        super().__init__()
        conv = CONV[architecture.conv_dim]
        self.binary = conv(in_channels, 2, 1)
        self.features = ConvBlock(architecture, in_channels, attention_channels, architecture.kernel_sizes[0],
                                  [1] * architecture.conv_dim)
        self.classifier = conv(attention_channels, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        binary = self.binary(x)
        foreground = torch.softmax(binary.float(), dim=1)[:, 1:].to(x.dtype)
        features = self.features(x)
        return self.classifier(foreground * features + features), binary


class TwoStepUNet(UNet):
    """The plans' U-Net whose full-resolution head is a ``TwoStepHead``."""

    def __init__(self, architecture: ArchitecturePlan, num_input_channels: int, num_outputs: int,
                 deep_supervision: bool = True, attention_channels: int = ATTENTION_CHANNELS,
                 num_case_classes: int = 0):
        super().__init__(architecture, num_input_channels, num_outputs, deep_supervision)
        self.seg_heads[-1] = nn.Identity()  # the full-resolution plain head is replaced by the two-step head
        self.two_step = TwoStepHead(architecture, architecture.features_per_stage[0], num_outputs, attention_channels)
        self.two_step.apply(init_he)
        self.classifier = nn.Linear(architecture.features_per_stage[-1], 1 + num_case_classes) \
            if num_case_classes else None

    def _class_logits(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.classifier(bottleneck.flatten(2).mean(-1))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 1 + num_case_classes)`` of patches ``x`` (the encoder only)."""
        return self._class_logits(self.encode(x)[-1])

    def forward(self, x: torch.Tensor):
        skips = self.encode(x)
        decoder_features = self.decode(skips)
        output, binary = self.two_step(decoder_features[0])
        if not self.deep_supervision:
            return output
        lower = [head(features) for head, features in zip(self.seg_heads[::-1][1:], decoder_features[1:])]
        if self.classifier is None:
            return [output, *lower], binary
        return ([output, *lower], binary), self._class_logits(skips[-1])
