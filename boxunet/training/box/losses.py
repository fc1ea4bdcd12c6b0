"""The box trainers' losses and the decision that goes with them: cross-entropy with [Yang 2020]'s class weights
(background 0.2, every label 1.0), optionally plus soft Dice, and the class-prior correction of the logits."""
import torch

from boxunet.errors import BoxunetError
from boxunet.training.box.options import BOX_LOSSES
from boxunet.training.losses import DiceCELoss, WeightedCELoss

BACKGROUND_CLASS_WEIGHT = 0.2  # [Yang 2020]: 1.0 for the tumor, 0.2 for the background


def box_class_weights(num_classes: int) -> list[float]:
    """[Yang 2020]'s cross-entropy class weights: background 0.2, every label 1.0."""
    return [BACKGROUND_CLASS_WEIGHT] + [1.0] * (num_classes - 1)


def box_loss(name: str, num_classes: int, batch_dice: bool) -> torch.nn.Module:
    """The loss ``name`` (one of ``BOX_LOSSES``) of one output: cross-entropy with the class weights of [Yang 2020]
    (``box_class_weights``), plus soft Dice for the ``*_dice`` variants. Voxel weights, when the trainer
    passes them (``vwce*``), multiply both terms."""
    if name not in BOX_LOSSES:
        raise BoxunetError(f"--loss {name!r}: choose one of {', '.join(BOX_LOSSES)}")
    class_weights = box_class_weights(num_classes)
    if name.endswith("_dice"):
        return DiceCELoss(batch_dice=batch_dice, class_weights=class_weights)
    return WeightedCELoss(class_weights)


def correct_class_prior(logits: torch.Tensor, channel_axis: int = 0) -> torch.Tensor:
    """``logits`` minus log w_c of ``box_class_weights`` along ``channel_axis`` (logit adjustment): a network
    trained with class-weighted cross-entropy learns softmax outputs proportional to w_c p_c, so its argmax
    calls a voxel label c already where p_c > 0.2 p_background; removing the weights' log restores the argmax
    of p_c. Exact for (v)wce; with an added Dice term, which has no class weights, it is an approximation."""
    classes = logits.shape[channel_axis]
    offsets = -torch.tensor(box_class_weights(classes), dtype=logits.dtype, device=logits.device).log()
    shape = [1] * logits.ndim
    shape[channel_axis] = classes
    return logits + offsets.view(shape)


class ClassWeightedDecision:
    """For trainers whose loss carries [Yang 2020]'s class weights: predictions and the validation pseudo Dice use
    the prior-corrected logits (``correct_class_prior``)."""

    @classmethod
    def decision_logits(cls, logits: torch.Tensor, channel_axis: int) -> torch.Tensor:
        return correct_class_prior(logits, channel_axis)
