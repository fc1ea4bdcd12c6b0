"""Sliding-window inference: window positions, Gaussian weights, and equality with whole-image
prediction for pointwise networks (for which the weighting cancels)."""
import numpy as np
import pytest
import torch

from boxunet.inference.regions import OUTSIDE_LOGIT, box_regions, predict_box_regions
from boxunet.inference.sliding_window import gaussian_importance_map, predict_sliding_window, sliding_window_steps
from boxunet.io.boxes import Box


def test_steps_are_evenly_spaced_with_half_patch_overlap():
    # size 10, patch 4: ceil((10 - 4) / (4 * 0.5)) + 1 = 4 starts, spaced (10 - 4) / 3 = 2 apart
    assert sliding_window_steps([10], [4]) == [[0, 2, 4, 6]]
    # size 11, patch 4: ceil(7 / 2) + 1 = 5 starts at 0, 1.75, 3.5, 5.25, 7 -> rounded 0, 2, 4, 5, 7
    # size 4 = patch: one start; step 1.0 with size 12, patch 4: ceil(8 / 4) + 1 = 3 starts 0, 4, 8
    assert sliding_window_steps([11, 4], [4, 4]) == [[0, 2, 4, 5, 7], [0]]
    assert sliding_window_steps([12], [4], step_size=1.0) == [[0, 4, 8]]
    with pytest.raises(ValueError):
        sliding_window_steps([3], [4])


def test_gaussian_peaks_at_ten_in_the_centre():
    weights = gaussian_importance_map((8, 6, 5))
    assert weights.dtype == torch.float32 and weights.shape == (8, 6, 5)
    assert weights[4, 3, 2] == pytest.approx(10.0)
    assert weights.max() == weights[4, 3, 2] and weights.min() > 0
    # one axis: sigma = 8 / 8 = 1, one voxel from the centre -> 10 * exp(-1 / 2)
    assert weights[5, 3, 2] == pytest.approx(10 * torch.exp(torch.tensor(-0.5)).item(), rel=1e-5)


def _pointwise_3d() -> torch.nn.Conv3d:
    torch.manual_seed(0)
    return torch.nn.Conv3d(2, 3, kernel_size=1)


def test_pointwise_network_gives_the_whole_image_result():
    network = _pointwise_3d()
    data = torch.randn(2, 9, 13, 11)
    with torch.no_grad():
        expected = network(data[None])[0]
    network.train()
    result = predict_sliding_window(network, data, (4, 8, 6), 3, batch_size=2)
    assert result.shape == (3, 9, 13, 11) and result.dtype == torch.float32
    assert torch.allclose(result, expected, atol=1e-5)
    assert network.training, "the caller's training mode is restored"
    result.clamp_(-1e4, 1e4)  # an ordinary tensor: callers may update it in place (not an inference tensor)
    plain = predict_sliding_window(network, data, (4, 8, 6), 3, use_gaussian=False, mirror_axes=(0, 1, 2))
    assert torch.allclose(plain, expected, atol=1e-5)


class _Ramp(torch.nn.Module):
    """Ignores its input and returns x (last axis index) in every voxel; counts its calls."""

    calls = 0

    def forward(self, batch):
        self.calls += 1
        ramp = torch.arange(batch.shape[-1], dtype=torch.float32).expand(batch.shape[:1] + (1,) + batch.shape[2:])
        return [ramp, ramp[..., ::2]]  # deep supervision: the first output is used


def test_mirroring_flips_back_and_runs_every_combination():
    network = _Ramp()
    data = torch.zeros(1, 4, 4, 6)
    result = predict_sliding_window(network, data, (4, 4, 6), 1, mirror_axes=(0, 1, 2))
    assert network.calls == 8
    # the ramp 0..5 and its flipped-back mirror 5..0 average to 2.5; without the last axis it stays a ramp
    assert torch.allclose(result, torch.full((1, 4, 4, 6), 2.5))
    unmirrored = predict_sliding_window(network, data, (4, 4, 6), 1, mirror_axes=(0, 1))
    assert torch.allclose(unmirrored[0, 1, 2], torch.arange(6, dtype=torch.float32))


def test_image_smaller_than_the_patch_is_padded_and_cropped_back():
    network = _pointwise_3d()
    data = torch.randn(2, 3, 5, 4)
    with torch.no_grad():
        expected = network(data[None])[0]
    result = predict_sliding_window(network, data, (4, 8, 6), 3)
    assert result.shape == (3, 3, 5, 4)
    assert torch.allclose(result, expected, atol=1e-5)


def test_2d_patches_predict_every_slice_of_3d_data():
    torch.manual_seed(1)
    network = torch.nn.Conv2d(1, 2, kernel_size=1)  # fails on 5D input: slices must arrive as 2D images
    data = torch.randn(1, 5, 12, 10)
    with torch.no_grad():
        expected = network(data[0][:, None]).transpose(0, 1)  # slices as a batch -> (2, 5, 12, 10)
    result = predict_sliding_window(network, data, (8, 8), 2, mirror_axes=(0, 1), batch_size=3)
    assert result.shape == (2, 5, 12, 10)
    assert torch.allclose(result, expected, atol=1e-5)


def test_separable_weight_sums_equal_the_explicit_sum_and_cover_every_voxel():
    from boxunet.inference.sliding_window import _summed_weight_per_axis, _window_starts
    shape, patch = (11, 23, 17), (4, 8, 6)
    starts = _window_starts(shape, patch, patch, 0.5)
    assert starts == [[0, 2, 4, 5, 7], [0, 4, 8, 11, 15], [0, 3, 6, 8, 11]]
    explicit = torch.zeros(shape)
    weights = gaussian_importance_map(patch, value_scaling=1.0)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                explicit[z:z + 4, y:y + 8, x:x + 6] += weights
    sums = _summed_weight_per_axis(shape, patch, starts, use_gaussian=True)
    separable = sums[0][:, None, None] * sums[1][None, :, None] * sums[2][None, None, :]
    assert torch.allclose(separable, explicit, rtol=1e-5, atol=0)
    # every voxel is covered; the least is the image corner, seen only at the corner of the first window
    # where each axis' profile is exp(-8) (half a patch is 4 sigma)
    assert explicit.min().item() == pytest.approx(np.exp(-24), rel=1e-4)
    # without the Gaussian the sums count the windows covering each voxel: z index 5 lies in windows 2, 4, 5
    counts = _summed_weight_per_axis(shape, patch, starts, use_gaussian=False)
    assert counts[0][5].item() == 3.0 and counts[0][0].item() == 1.0


def test_several_networks_are_averaged():
    torch.manual_seed(1)
    first, second = torch.nn.Conv3d(1, 2, 1), torch.nn.Conv3d(1, 2, 1)
    data = torch.randn(1, 7, 9, 10)
    with torch.no_grad():
        expected = (first(data[None])[0] + second(data[None])[0]) / 2
    result = predict_sliding_window([first, second], data, (4, 6, 6), 2, mirror_axes=(0, 2))
    assert torch.allclose(result, expected, atol=1e-5)


def test_box_regions_grow_to_a_patch_stay_inside_and_merge():
    boxes = [Box(2, (5, 5, 5), (10, 10, 10)), Box(2, (12, 40, 40), (14, 44, 44)), Box(1, (60, 5, 5), (62, 6, 6)),
             Box(2, (8, 8, 8), (20, 12, 12))]
    regions = box_regions(boxes, (64, 64, 64), (16, 16, 16), (4, 4, 4))
    # box 1 + 4 = [1, 14) grown evenly to 16 -> [0, 16); box 4 + 4 = [4, 24) x [4, 16) x [4, 16), grown to
    # [4, 24) x [2, 18) x [2, 18), overlaps it: merged; box 2 + 4 = [8, 18) x [36, 48) grown to 16 -> [5, 21) x
    # [34, 50); box 3 is pushed inside: [48, 64) x [0, 16)
    assert regions == [(slice(0, 24), slice(0, 18), slice(0, 18)), (slice(5, 21), slice(34, 50), slice(34, 50)),
                       (slice(48, 64), slice(0, 16), slice(0, 16))]
    # 2D patches on 3D data: the leading axis keeps the box's slices; an image smaller than the patch: all of it
    assert box_regions([Box(2, (5, 5, 5), (10, 10, 10))], (64, 12, 64), (32, 16), (4, 4)) == \
        [(slice(5, 10), slice(0, 12), slice(0, 16))]
    assert box_regions([], (64, 64, 64), (16, 16, 16), (4, 4, 4)) == []


def test_box_region_prediction_equals_the_whole_image_inside_the_regions():
    network = _pointwise_3d()
    data = torch.randn(2, 30, 26, 28)
    boxes = [Box(2, (3, 4, 5), (6, 8, 9)), Box(2, (22, 18, 20), (25, 21, 24))]
    whole = predict_sliding_window(network, data, (8, 8, 8), 3)
    logits = predict_box_regions(network, data, boxes, (8, 8, 8), 3, (2, 2, 2))
    inside = torch.zeros(data.shape[1:], dtype=torch.bool)
    for region in box_regions(boxes, data.shape[1:], (8, 8, 8), (2, 2, 2)):
        inside[region] = True
    assert inside.sum() == 2 * 8 ** 3  # each box + 2 is 7 or 8 voxels per axis, grown to the patch (8)
    torch.testing.assert_close(logits[:, inside], whole[:, inside], rtol=1e-5, atol=1e-5)
    assert (logits[0, ~inside] == OUTSIDE_LOGIT).all() and (logits[1:, ~inside] == -OUTSIDE_LOGIT).all()
