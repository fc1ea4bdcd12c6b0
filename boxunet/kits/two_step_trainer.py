"""``TwoStepAttention``: the plans' U-Net with seed 003's 2-step attention head (boxunet.nets.two_step),
trained with the segmentation loss plus the binary cross-entropy of the head's first step."""
from torch import nn

from boxunet.nets.two_step import TwoStepUNet
from boxunet.planning.plans import ConfigurationPlan, Plans
from boxunet.preprocessing.previous_stage import network_input_channels
from boxunet.training.losses import AuxiliaryHeadLoss, binary_cross_entropy_of_foreground
from boxunet.training.registry import register_trainer
from boxunet.training.trainer import Trainer


@register_trainer
class TwoStepAttention(Trainer):
    """Binary (kidney and tumor vs. background) attention, then the classes (seed 003, Eq. 1)."""

    @classmethod
    def build_network(cls, plans: Plans, configuration: ConfigurationPlan, num_outputs: int) -> nn.Module:
        return TwoStepUNet(configuration.architecture, network_input_channels(plans, configuration), num_outputs)

    def build_loss(self) -> nn.Module:
        return AuxiliaryHeadLoss(super().build_loss(), binary_cross_entropy_of_foreground)

    def segmentation_outputs(self, outputs) -> list:
        return outputs[0]
