"""Losses on hand-computed examples (the arithmetic is in the comments)."""
import math

import pytest
import torch

from boxunet.training.losses import (DeepSupervisionLoss, DiceBCELoss, DiceCELoss, SoftDiceLoss, cross_entropy,
                                     deep_supervision_weights, soft_dice)

LN3 = math.log(3)


def ce_example():
    """Voxel a: logits (0, ln 3) -> p = (1/4, 3/4), target 1 -> CE ln(4/3).
    Voxel b: logits (0, 0) -> p = (1/2, 1/2), target 0 -> CE ln 2.
    Voxel c: logits (5, -5), target 255 (an ignore label), only used with an ignore mask."""
    logits = torch.tensor([[0.0, 0.0, 5.0], [LN3, 0.0, -5.0]]).reshape(1, 2, 1, 3)
    target = torch.tensor([1, 0, 255]).reshape(1, 1, 1, 3)
    ignore = torch.tensor([False, False, True]).reshape(1, 1, 1, 3)
    return logits, target, ignore


def test_cross_entropy_two_voxels():
    logits, target, _ = ce_example()
    # (ln(4/3) + ln 2) / 2
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert cross_entropy(logits[..., :2], target[..., :2]).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_ignored_voxel_is_excluded_from_sum_and_count():
    logits, target, ignore = ce_example()
    # voxel c adds nothing and the count is 2, not 3: (ln(4/3) + ln 2) / 2
    expected = (math.log(4 / 3) + math.log(2)) / 2
    assert cross_entropy(logits, target, ignore).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_voxel_and_class_weights():
    logits, target, ignore = ce_example()
    voxel_weights = torch.tensor([2.0, 0.5, 100.0]).reshape(1, 1, 1, 3)
    # voxel a: 2 * w_class[1] = 2 * 3 -> 6 ln(4/3); voxel b: 0.5 * w_class[0] = 0.5 -> 0.5 ln 2;
    # voxel c ignored despite its weight 100; normalized by 2 non-ignored voxels (not by the weight sum)
    expected = (6 * math.log(4 / 3) + 0.5 * math.log(2)) / 2
    loss = cross_entropy(logits, target, ignore, voxel_weights, class_weights=[1.0, 3.0])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_all_ignored_is_zero():
    logits, target, _ = ce_example()
    assert cross_entropy(logits, target, torch.ones_like(target, dtype=torch.bool)).item() == 0


def dice_example():
    """Batch of 2, 2 classes, 2 voxels. Sample 0 labels (1, 0), class-1 probabilities (0.8, 0.4);
    sample 1 labels (1, 1), class-1 probabilities (0.5, 1.0); class 0 gets 1 - p."""
    p1 = torch.tensor([[0.8, 0.4], [0.5, 1.0]])
    y1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    probabilities = torch.stack([1 - p1, p1], 1).reshape(2, 2, 1, 2)
    one_hot = torch.stack([1 - y1, y1], 1).reshape(2, 2, 1, 2)
    return probabilities, one_hot


def test_soft_dice_per_sample_and_batch():
    probabilities, one_hot = dice_example()
    # class 1, sample 0: tp 0.8, fp 0.4, fn 0.2 -> 1.6 / 2.2 = 8/11
    #          sample 1: tp 1.5, fp 0,   fn 0.5 -> 3 / 3.5  = 6/7;  mean (8/11 + 6/7) / 2 = 61/77
    dice = soft_dice(probabilities, one_hot, batch_dice=False, smooth=0)
    assert dice.tolist() == pytest.approx([61 / 77])
    # batch: tp 2.3, fp 0.4, fn 0.7 -> 4.6 / 5.7 = 46/57
    assert soft_dice(probabilities, one_hot, batch_dice=True, smooth=0).tolist() == pytest.approx([46 / 57])


def test_soft_dice_with_background():
    probabilities, one_hot = dice_example()
    # class 0, sample 0: labels (0, 1), p (0.2, 0.6): tp 0.6, fp 0.2, fn 0.4 -> 1.2 / 1.8 = 2/3
    #          sample 1: labels (0, 0), p (0.5, 0):   tp 0,   fp 0.5, fn 0   -> 0;  mean 1/3
    # batch: tp 0.6, fp 0.7, fn 0.4 -> 1.2 / 2.3 = 12/23
    assert soft_dice(probabilities, one_hot, False, do_bg=True, smooth=0).tolist() == pytest.approx([1 / 3, 61 / 77])
    assert soft_dice(probabilities, one_hot, True, do_bg=True, smooth=0).tolist() == pytest.approx([12 / 23, 46 / 57])


def test_soft_dice_with_ignore_mask_and_voxel_weights():
    probabilities, one_hot = dice_example()
    ignore = torch.tensor([[False, True], [False, False]]).reshape(2, 1, 1, 2)
    # sample 0 voxel b ignored -> class 1: tp 0.8, fp 0, fn 0.2 -> 1.6 / 1.8 = 8/9; mean (56/63 + 54/63) / 2 = 55/63
    # batch: tp 2.3, fp 0, fn 0.7 -> 4.6 / 5.3 = 46/53
    assert soft_dice(probabilities, one_hot, False, smooth=0, mask=ignore).tolist() == pytest.approx([55 / 63])
    assert soft_dice(probabilities, one_hot, True, smooth=0, mask=ignore).tolist() == pytest.approx([46 / 53])
    weights = torch.tensor([[2.0, 1.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
    # sample 0 voxel a weighs 2: tp 1.6, fp 0.4, fn 0.4 -> 3.2 / 4 = 0.8; mean (5.6/7 + 6/7) / 2 = 58/70
    assert soft_dice(probabilities, one_hot, False, smooth=0, weights=weights).tolist() == pytest.approx([58 / 70])


def test_perfect_prediction_gives_dice_loss_minus_one():
    target = torch.tensor([0, 1, 2, 2, 1, 0]).reshape(1, 1, 2, 3)
    logits = 30 * torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float()
    for batch_dice in (False, True):
        assert SoftDiceLoss(batch_dice)(logits, target).item() == pytest.approx(-1, abs=1e-6)


def test_dice_ce_is_the_weighted_sum_and_ignores_masked_voxels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 4, 4))
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[0, 0, 0] = True
    target[ignore] = 255
    loss = DiceCELoss(batch_dice=False, dice_weight=2.0, ce_weight=0.5)(logits, target, ignore)
    expected = 0.5 * cross_entropy(logits, target, ignore) + 2.0 * SoftDiceLoss(False)(logits, target, ignore)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # ignored voxels get no gradient from either term
    assert torch.all(logits.grad[0, :, 0] == 0) and logits.grad[1].abs().sum() > 0


def test_dice_bce_two_regions():
    # region 0: logits (ln 3, 0) -> sigmoid (3/4, 1/2), target (1, 0): BCE ln(4/3), ln 2;
    #           dice tp 3/4, fp 1/2, fn 1/4 -> 1.5 / 2.25 = 2/3
    # region 1: logits (0, ln 3) -> sigmoid (1/2, 3/4), target (1, 1): BCE ln 2, ln(4/3);
    #           dice tp 5/4, fp 0, fn 3/4 -> 2.5 / 3.25 = 10/13
    # BCE mean over 4 elements = (ln(4/3) + ln 2) / 2; dice mean = (2/3 + 10/13) / 2 = 28/39
    logits = torch.tensor([[LN3, 0.0], [0.0, LN3]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(1, 2, 1, 2)
    expected = (math.log(4 / 3) + math.log(2)) / 2 - 28 / 39
    assert DiceBCELoss(batch_dice=True, smooth=0)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # ignoring voxel b: BCE (ln(4/3) + ln 2) / 2 over the 2 remaining elements;
    # dice region 0: tp 3/4, fn 1/4 -> 6/7; region 1: tp 1/2, fn 1/2 -> 2/3; mean 32/42
    ignore = torch.tensor([False, True]).reshape(1, 1, 1, 2)
    expected = (math.log(4 / 3) + math.log(2)) / 2 - 32 / 42
    assert DiceBCELoss(True, smooth=0)(logits, target, ignore).item() == pytest.approx(expected, rel=1e-6)


def test_deep_supervision_weights():
    # 1, 1/2, 1/4, 0 normalized by 1.75
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0])
    assert deep_supervision_weights(1) == [1.0]


class RecordingLoss(torch.nn.Module):
    """Returns the output's mean plus the target's; records the masks/weights it received."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, output, target, ignore_mask=None, voxel_weights=None):
        self.calls.append((ignore_mask, voxel_weights))
        return output.mean() + target.mean()


def test_deep_supervision_loss_weights_and_skips_zero_weights():
    inner = RecordingLoss()
    loss = DeepSupervisionLoss(inner, [0.75, 0.25, 0.0])
    outputs = [torch.full((1, 1, 4), 1.0), torch.full((1, 1, 2), 2.0), None]  # a zero-weight output is never used
    targets = [torch.zeros(1, 1, 4), torch.full((1, 1, 2), 2.0), None]
    masks, weights = ["m0", "m1", "m2"], ["w0", "w1", "w2"]
    # 0.75 * (1 + 0) + 0.25 * (2 + 2) = 1.75
    assert loss(outputs, targets, masks, weights).item() == pytest.approx(1.75)
    assert inner.calls == [("m0", "w0"), ("m1", "w1")]
    with pytest.raises(ValueError, match="targets has 2 entries"):
        loss(outputs, targets[:2])


def test_deep_supervision_with_dice_ce():
    torch.manual_seed(1)
    outputs = [torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)]
    targets = [torch.randint(0, 2, (1, 1, 4, 4)), torch.randint(0, 2, (1, 1, 2, 2))]
    dice_ce = DiceCELoss(batch_dice=True)
    # two outputs: weights 1, 0 -> only the full-resolution output counts
    assert DeepSupervisionLoss(dice_ce, deep_supervision_weights(2))(outputs, targets).item() == pytest.approx(
        dice_ce(outputs[0], targets[0]).item())


def test_losses_are_float32_under_autocast():
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 4, 4).bfloat16()
    target = torch.randint(0, 3, (1, 1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceCELoss(batch_dice=False)(logits, target)
        bce = DiceBCELoss(batch_dice=False)(logits, (target > 0).float().expand(-1, 3, -1, -1))
    assert loss.dtype == torch.float32 and bce.dtype == torch.float32
    assert loss.item() == pytest.approx(DiceCELoss(batch_dice=False)(logits.float(), target).item(), rel=1e-6)
