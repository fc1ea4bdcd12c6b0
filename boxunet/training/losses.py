"""Segmentation losses: soft Dice, (voxel/class-weighted) cross-entropy, Dice+CE, Dice+BCE, deep supervision;
losses of networks with an auxiliary head (``AuxiliaryHeadLoss``) and the weighted MSE of heatmap regression heads (``weighted_mse``).

Conventions shared by every loss:

* inputs are logits ``(B, C, *spatial)``; the loss is computed in float32 with autocast disabled;
* ``ignore_mask`` is bool ``(B, 1, *spatial)``, True = voxel ignored: ignored voxels contribute to no term
  (numerator or normalizer) and their target value may be anything, e.g. an ignore label;
* ``voxel_weights`` is float ``(B, 1, *spatial)``; it multiplies each voxel's cross-entropy and its
  Dice tp/fp/fn contributions;
* cross-entropy is normalized by the number of non-ignored voxels (not by the sum of the weights):
  ``sum_v w_voxel[v] * w_class[target[v]] * ce[v] / #non-ignored voxels``;
* the Dice loss is ``-mean dice`` (nnU-Net convention), so a perfect prediction gives -1.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def labels_to_regions(labels: torch.Tensor, regions: list) -> torch.Tensor:
    """Region targets ``(B, R, *)`` (float 0/1) of a label map ``(B, 1, *)``: channel r is 1 where the label is one
    of region r's values (``regions`` as ``Labels.regions`` gives them)."""
    return torch.cat([torch.isin(labels, torch.tensor(r, device=labels.device).reshape(-1)) for r in regions],
                     1).float()


@contextmanager
def _float32(tensor: torch.Tensor):
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield


def _valid_weights(reference: torch.Tensor, ignore_mask: torch.Tensor | None,
                   voxel_weights: torch.Tensor | None) -> torch.Tensor | None:
    """Per-voxel factor ``(B, 1, *)``: voxel weight (or 1) and 0 where ignored; None if neither is given."""
    if ignore_mask is None and voxel_weights is None:
        return None
    factor = torch.ones_like(reference[:, :1]) if voxel_weights is None else voxel_weights.float()
    if ignore_mask is not None:
        factor = factor * (~ignore_mask.bool()).float()
    return factor


def _clean_target(target: torch.Tensor, ignore_mask: torch.Tensor | None) -> torch.Tensor:
    """Integer target with ignored voxels set to 0, so an ignore label never reaches one-hot or CE."""
    target = target.long()
    return target if ignore_mask is None else target.masked_fill(ignore_mask.bool(), 0)


def _valid_count(reference: torch.Tensor, ignore_mask: torch.Tensor | None) -> torch.Tensor:
    """Number of non-ignored voxels of ``reference`` ``(B, 1, *)``, at least 1."""
    if ignore_mask is None:
        return torch.tensor(float(reference[:, :1].numel()), device=reference.device)
    return (~ignore_mask.bool()).sum().float().clamp_min(1.0)


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks of the data-parallel group. Every rank's loss is the same function
    of the sum, so the gradient each rank passes on is the sum of theirs; DDP's averaging then gives exactly
    the gradient of a single process on the whole global batch."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        summed = gradient.clone()
        dist.all_reduce(summed)
        return summed


def _over_global_batch(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of a data-parallel group (itself outside one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _SumOverRanks.apply(tensor)
    return tensor


def soft_dice(probabilities: torch.Tensor, one_hot_target: torch.Tensor, batch_dice: bool, do_bg: bool = False,
              smooth: float = 1e-5, mask: torch.Tensor | None = None,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice per class, ``(2 tp + smooth) / (2 tp + fp + fn + smooth)``, shape ``(C,)`` (``(C - 1,)`` without bg).

    ``mask`` is an ignore mask (True = ignored, as ``ignore_mask`` elsewhere); ``weights`` are voxel weights.
    With ``batch_dice`` tp/fp/fn are summed over batch and space (one Dice per class), and in data-parallel
    training over the global batch of every rank; otherwise Dice is computed per sample and averaged over the
    batch. ``do_bg=False`` drops channel 0.
    """
    probabilities, one_hot_target = probabilities.float(), one_hot_target.float()
    if not do_bg:
        probabilities, one_hot_target = probabilities[:, 1:], one_hot_target[:, 1:]
    factor = _valid_weights(probabilities, mask, weights)
    axes = ([0] if batch_dice else []) + list(range(2, probabilities.ndim))
    weighted = probabilities if factor is None else probabilities * factor
    tp = (weighted * one_hot_target).sum(axes)
    fp = weighted.sum(axes) - tp
    fn = (one_hot_target if factor is None else one_hot_target * factor).sum(axes) - tp
    if batch_dice:
        tp, fp, fn = _over_global_batch(torch.stack([tp, fp, fn])).unbind(0)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(1e-8)
    return dice if batch_dice else dice.mean(0)


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, 1, *)`` integer labels -> ``(B, C, *)`` float one-hot."""
    return torch.zeros((target.shape[0], num_classes, *target.shape[2:]), device=target.device).scatter_(
        1, target, 1.0)


class SoftDiceLoss(nn.Module):
    """``-mean`` soft Dice of softmax(logits) against a label map ``(B, 1, *)``."""

    def __init__(self, batch_dice: bool, do_bg: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.batch_dice, self.do_bg, self.smooth = batch_dice, do_bg, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_mask: torch.Tensor | None = None,
                voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
        with _float32(logits):
            probabilities = torch.softmax(logits.float(), 1)
            one_hot = _one_hot(_clean_target(target, ignore_mask), logits.shape[1])
            return -soft_dice(probabilities, one_hot, self.batch_dice, self.do_bg, self.smooth,
                              ignore_mask, voxel_weights).mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_mask: torch.Tensor | None = None,
                  voxel_weights: torch.Tensor | None = None,
                  class_weights: torch.Tensor | list[float] | None = None) -> torch.Tensor:
    """Weighted softmax cross-entropy, ``sum(w_voxel * w_class[target] * ce) / #non-ignored voxels``.

    ``target`` is ``(B, 1, *)`` integer; if every voxel is ignored the loss is 0.
    """
    with _float32(logits):
        target = _clean_target(target, ignore_mask)
        per_voxel = F.cross_entropy(logits.float(), target[:, 0], reduction="none").unsqueeze(1)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
            per_voxel = per_voxel * class_weights[target]
        factor = _valid_weights(per_voxel, ignore_mask, voxel_weights)
        if factor is not None:
            per_voxel = per_voxel * factor
        return per_voxel.sum() / _valid_count(per_voxel, ignore_mask)


class WeightedCELoss(nn.Module):
    """Cross-entropy with class weights and optional voxel weights: WCE ([Yang 2020] Eq. 8) and, with voxel
    weights, VWCE (Eq. 9)."""

    def __init__(self, class_weights: torch.Tensor | list[float]):
        super().__init__()
        self.class_weights = class_weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_mask: torch.Tensor | None = None,
                voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
        return cross_entropy(logits, target, ignore_mask, voxel_weights, self.class_weights)


class DiceCELoss(nn.Module):
    """``ce_weight * cross_entropy + dice_weight * SoftDiceLoss`` for softmax training on label maps.

    Voxel weights and the ignore mask apply to both terms; class weights only to cross-entropy.
    """

    def __init__(self, batch_dice: bool, dice_weight: float = 1.0, ce_weight: float = 1.0, do_bg: bool = False,
                 smooth: float = 1e-5, class_weights: torch.Tensor | list[float] | None = None):
        super().__init__()
        self.dice = SoftDiceLoss(batch_dice, do_bg, smooth)
        self.dice_weight, self.ce_weight, self.class_weights = dice_weight, ce_weight, class_weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_mask: torch.Tensor | None = None,
                voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
        ce = cross_entropy(logits, target, ignore_mask, voxel_weights, self.class_weights)
        return self.ce_weight * ce + self.dice_weight * self.dice(logits, target, ignore_mask, voxel_weights)


class DiceBCELoss(nn.Module):
    """``bce_weight * BCE-with-logits + dice_weight * (-mean soft Dice of sigmoid)`` for region training.

    ``target`` is ``(B, R, *)`` binary float. BCE is averaged over the non-ignored voxel x region
    elements (voxel weights multiply it); Dice includes every region (``do_bg=True``).
    """

    def __init__(self, batch_dice: bool, dice_weight: float = 1.0, bce_weight: float = 1.0,
                 smooth: float = 1e-5):
        super().__init__()
        self.batch_dice, self.dice_weight, self.bce_weight, self.smooth = batch_dice, dice_weight, bce_weight, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_mask: torch.Tensor | None = None,
                voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
        with _float32(logits):
            logits, target = logits.float(), target.float()
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            factor = _valid_weights(logits, ignore_mask, voxel_weights)
            if factor is not None:
                bce = bce * factor
            bce = bce.sum() / (_valid_count(logits, ignore_mask) * logits.shape[1])
            dice = soft_dice(torch.sigmoid(logits), target, self.batch_dice, True, self.smooth,
                             ignore_mask, voxel_weights)
            return self.bce_weight * bce - self.dice_weight * dice.mean()


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[Zhang 2019]'s WMSE for heatmap regression, the mean of two terms over the whole batch:

    ``sum_{t>0} (l - t)^2 / sum_{t>0} t`` and ``sum_{t<=0} (l - t)^2 / #{t<=0}``.

    The paper writes the second denominator as ``sum_{t<=0} t``, which is 0 for heatmaps (never negative);
    the count of those voxels is the reading that gives the background term the scale of a mean. A term
    with no voxels is 0, so an all-background patch is scored by the plain MSE of its background half.
    """
    with _float32(prediction):
        prediction, target = prediction.float(), target.float()
        squared = (prediction - target) ** 2
        positive = target > 0
        foreground = (squared * positive).sum() / target.clamp_min(0).sum().clamp_min(1e-8)
        background = (squared * ~positive).sum() / (~positive).sum().clamp_min(1)
        return (foreground + background) / 2


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights ``1 / 2^i`` (highest resolution first), the lowest-resolution output 0, normalized to sum 1."""
    weights = [1 / 2 ** i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    return [w / sum(weights) for w in weights]


class DeepSupervisionLoss(nn.Module):
    """``sum_i weights[i] * loss(outputs[i], targets[i], ignore_masks[i], voxel_weights[i])``, zero weights skipped."""

    def __init__(self, loss: nn.Module, weights: list[float]):
        super().__init__()
        if not any(weights):
            raise ValueError("deep supervision weights are all zero")
        self.loss, self.weights = loss, list(weights)

    def forward(self, outputs: list[torch.Tensor], targets: list[torch.Tensor],
                ignore_masks: list[torch.Tensor] | None = None,
                voxel_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        n = len(self.weights)
        for name, values in (("outputs", outputs), ("targets", targets), ("ignore_masks", ignore_masks),
                             ("voxel_weights", voxel_weights)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries, expected {n} (one per weight)")
        total = None
        for i, weight in enumerate(self.weights):
            if weight == 0:
                continue
            term = weight * self.loss(outputs[i], targets[i], None if ignore_masks is None else ignore_masks[i],
                                      None if voxel_weights is None else voxel_weights[i])
            total = term if total is None else total + term
        return total


def foreground_target(target: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *)`` long foreground (1) / background (0) of a label target ``(B, 1, *)`` or a region target
    ``(B, R, *)`` (float 0/1): foreground is any label above 0, or any region."""
    if target.is_floating_point():
        return (target.amax(1, keepdim=True) > 0.5).long()
    return (target > 0).long()


def binary_cross_entropy_of_foreground(logits: torch.Tensor, target: torch.Tensor,
                                       ignore_mask: torch.Tensor | None = None,
                                       voxel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of two-channel logits against the foreground of ``target`` (see ``foreground_target``)."""
    return cross_entropy(logits, foreground_target(target), ignore_mask, voxel_weights)


class AuxiliaryHeadLoss(nn.Module):
    """The loss of a network that returns ``(segmentation outputs, auxiliary output)``: the segmentation loss
    (e.g. with deep supervision) plus ``weight`` x ``auxiliary(auxiliary output, full-resolution target,
    ignore mask, voxel weights)``. [Pan 2019]'s 2-step loss (binary + ternary) has
    ``auxiliary=binary_cross_entropy_of_foreground``; [Zhang 2019]'s multi-task loss a heatmap WMSE."""

    def __init__(self, segmentation_loss: nn.Module, auxiliary, weight: float = 1.0):
        super().__init__()
        self.segmentation_loss, self.auxiliary, self.weight = segmentation_loss, auxiliary, weight

    def forward(self, outputs: tuple[list[torch.Tensor], torch.Tensor], targets: list[torch.Tensor],
                ignore_masks: list[torch.Tensor] | None = None,
                voxel_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        segmentation_outputs, auxiliary_output = outputs
        main = self.segmentation_loss(segmentation_outputs, targets, ignore_masks, voxel_weights)
        return main + self.weight * self.auxiliary(auxiliary_output, targets[0],
                                                   None if ignore_masks is None else ignore_masks[0],
                                                   None if voxel_weights is None else voxel_weights[0])
