"""Resampling (pixel-centre, separable, edge repeat) and per-channel normalization, checked by hand."""
import numpy as np
import pytest

from boxunet.planning.plans import NormalizationPlan
from boxunet.preprocessing.normalization import normalize_channel
from boxunet.preprocessing.resampling import (interpolation_taps, resample_axis, resample_channels,
                                              resample_segmentation, resample_volume, separate_z_axis,
                                              shape_at_spacing)

# ----------------------------------------------------------------------------------- 1D interpolation


def test_linear_taps_for_2x_upsampling():
    # output centres (i + 0.5) * 4 / 8 - 0.5 = -0.25, 0.25, 0.75, ..., 3.25
    index, weights = interpolation_taps(4, 8, 1)
    assert index.tolist() == [[0, 0, 0, 1, 1, 2, 2, 3],   # floor(centre), clipped to 0..3
                              [0, 1, 1, 2, 2, 3, 3, 3]]   # floor(centre) + 1, clipped
    assert weights.tolist() == [[0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75],
                                [0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25]]


def test_linear_2x_upsampling_values():
    result = resample_axis(np.array([0, 1, 2, 3], np.float32), 0, 8, 1)
    # centres -0.25 and 3.25 lie beyond the border -> the edge voxel is repeated
    assert result.tolist() == [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]


def test_linear_upsampling_along_every_axis_of_a_volume():
    ramp = np.array([0, 1, 2, 3], np.float32)
    expected = [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]
    for axis in range(3):
        shape = [2, 2, 2]
        shape[axis] = 4
        volume = np.broadcast_to(ramp.reshape([-1 if a == axis else 1 for a in range(3)]), shape).copy()
        result = resample_axis(volume, axis, 8, 1)
        assert np.moveaxis(result, axis, 0)[:, 1, 0].tolist() == expected


def test_linear_2x_downsampling_averages_pairs():
    # centres (i + 0.5) * 2 - 0.5 = 0.5, 2.5, 4.5, 6.5
    result = resample_axis(np.arange(8, dtype=np.float32)[None], 1, 4, 1)
    assert result.tolist() == [[0.5, 2.5, 4.5, 6.5]]


def test_linear_downsampling_of_a_1d_array():
    result = resample_axis(np.arange(8, dtype=np.float32), 0, 4, 1)
    assert result.tolist() == [0.5, 2.5, 4.5, 6.5]


def test_nearest_taps():
    # floor((i + 0.5) * scale), clipped
    assert interpolation_taps(4, 8, 0)[0].tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert interpolation_taps(8, 4, 0)[0].tolist() == [[1, 3, 5, 7]]
    assert interpolation_taps(3, 2, 0)[0].tolist() == [[0, 2]]  # floor(0.75), floor(2.25)
    assert interpolation_taps(4, 8, 0)[1].tolist() == [[1.0] * 8]
    values = np.array([[10, 20, 30, 40]], np.float32)
    assert resample_axis(values, 1, 8, 0).tolist() == [[10, 10, 20, 20, 30, 30, 40, 40]]


def test_unknown_order_is_rejected():
    with pytest.raises(ValueError, match="0, 1 or 3"):
        interpolation_taps(4, 8, 2)


def test_same_length_returns_the_input_unchanged():
    volume = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    for order in (0, 1, 3):
        assert resample_axis(volume, 1, 4, order) is volume


def test_cubic_keeps_a_constant_constant_including_the_borders():
    volume = np.full((2, 7), 5.0, np.float32)
    for new_length in (3, 5, 11, 20):
        assert np.allclose(resample_axis(volume, 1, new_length, 3), 5.0, atol=1e-5)


def test_cubic_weights_sum_to_one():
    for length, new_length in ((7, 20), (20, 7), (5, 13)):
        assert np.allclose(interpolation_taps(length, new_length, 3)[1].sum(axis=0), 1.0, atol=1e-6)


def test_cubic_at_integer_positions_returns_the_samples():
    # 9 -> 3: centres (i + 0.5) * 3 - 0.5 = 1, 4, 7 are sample positions; Keys' kernel is 1 at 0 and 0 at
    # +-1, +-2, so the result is exactly x[1], x[4], x[7]
    x = np.array([[3, -1, 4, 1, -5, 9, 2, -6, 5]], np.float32)
    assert resample_axis(x, 1, 3, 3).tolist() == [[-1, -5, -6]]


def test_cubic_reproduces_a_linear_ramp_away_from_the_borders():
    # Keys' kernel with a = -0.5 reproduces polynomials up to degree 2 exactly
    ramp = np.arange(20, dtype=np.float32)[None]
    for new_length in (13, 40, 57):
        result = resample_axis(ramp, 1, new_length, 3)[0]
        centres = (np.arange(new_length) + 0.5) * 20 / new_length - 0.5
        interior = (centres > 1) & (centres < 17)
        assert np.allclose(result[interior], centres[interior], atol=1e-4)


def test_cubic_edge_repeat_at_the_borders_of_a_ramp():
    # first output: centre -0.25, taps at -2, -1, 0, 1 (clipped to 0, 0, 0, 1) with distances 1.75, 0.75,
    # 0.25, 1.25: value = (1 - w(1.25)) * x[0] + w(1.25) * x[1] = w(1.25)
    # = a * (1.25^3 - 5 * 1.25^2 + 8 * 1.25 - 4) = -0.5 * 0.140625 = -0.0703125
    # last output: centre 19.25, taps 18, 19, 19, 19: 19 - w(1.25) = 19.0703125
    ramp = np.arange(20, dtype=np.float32)[None]
    result = resample_axis(ramp, 1, 40, 3)[0]
    assert result[0] == pytest.approx(-0.0703125, abs=1e-6)
    assert result[-1] == pytest.approx(19.0703125, abs=1e-5)


# ----------------------------------------------------------------------------------- shapes and axes

def test_shape_at_spacing_hand_computed():
    # 13 * 3 / 1 = 39, 40 * 0.8 / 1 = 32, 37 * 0.8 / 1 = 29.6 -> 30
    assert shape_at_spacing((13, 40, 37), (3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == [39, 32, 30]
    # 10 * 4 / 2 = 20, 20 * 1 / 0.8 = 25, 16 * 1 / 0.8 = 20
    assert shape_at_spacing((10, 20, 16), (4.0, 1.0, 1.0), (2.0, 0.8, 0.8)) == [20, 25, 20]
    assert shape_at_spacing((2, 5, 5), (1.0, 1.0, 1.0), (10.0, 1.0, 1.0)) == [1, 5, 5]  # at least 1


def test_shape_at_spacing_preserves_the_physical_extent_within_one_voxel():
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = rng.integers(5, 300, 3)
        spacing = rng.uniform(0.3, 6.0, 3)
        new_spacing = rng.uniform(0.3, 6.0, 3)
        new_shape = np.asarray(shape_at_spacing(shape, spacing, new_spacing))
        assert np.all(np.abs(new_shape * new_spacing - shape * spacing) <= new_spacing / 2 + 1e-9)


def test_round_trip_returns_the_original_shape_and_values():
    # (c, z, y, x) data that is constant in-plane and a ramp along z: the cubic plane pass keeps the
    # constants; z (separate axis, 4 / 1 > 3) uses nearest: 10 -> 20 repeats every slice twice
    # (floor((i + 0.5) / 2) = i // 2) and 20 -> 10 picks floor((i + 0.5) * 2) = 2i + 1, i.e. slice i again
    shape, spacing, target = (10, 20, 16), (4.0, 1.0, 1.0), (2.0, 0.8, 0.8)
    axis = separate_z_axis(spacing, target)
    assert axis == 0
    data = np.empty((2,) + shape, np.float32)
    data[0] = np.arange(10, dtype=np.float32)[:, None, None] * 10
    data[1] = 100 - np.arange(10, dtype=np.float32)[:, None, None]
    new_shape = shape_at_spacing(shape, spacing, target)
    up = resample_channels(data, new_shape, 3, axis, order_z=0)
    assert up.shape == (2, 20, 25, 20) and up.dtype == np.float32
    assert np.allclose(up[0, :, 7, 3], np.repeat(np.arange(10) * 10, 2), atol=1e-4)
    back = resample_channels(up, shape, 3, axis, order_z=0)
    assert back.shape == (2,) + shape
    assert np.allclose(back, data, atol=1e-3)
    # physical extent: 10 * 4 = 20 * 2, 20 * 1 = 25 * 0.8, 16 * 1 = 20 * 0.8
    assert np.allclose(np.array(new_shape) * target, np.array(shape) * spacing)


def test_round_trip_of_a_smooth_image_without_separate_axis():
    z, y, x = np.meshgrid(np.arange(12), np.arange(14), np.arange(16), indexing="ij")
    data = np.sin(z / 4.0)[None] + np.cos(y / 5.0)[None] + (x / 16.0)[None]
    data = data.astype(np.float32)
    spacing, target = (1.5, 1.0, 1.0), (1.0, 0.7, 0.7)
    assert separate_z_axis(spacing, target) is None
    new_shape = shape_at_spacing(data.shape[1:], spacing, target)
    assert new_shape == [18, 20, 23]  # 18, 20, 22.86 -> 23
    back = resample_channels(resample_channels(data, new_shape, 3), data.shape[1:], 3)
    assert back.shape == data.shape
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert np.abs(back[inner] - data[inner]).max() < 0.05


def test_separate_z_axis():
    assert separate_z_axis((3.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == 0       # original 3.75 > 3
    assert separate_z_axis((0.8, 3.0, 0.8), (1.0, 1.0, 1.0)) == 1
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 1.0, 4.0)) == 2       # else the target
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)) is None    # isotropic
    assert separate_z_axis((3.0, 1.0, 1.0), (3.0, 1.0, 1.0)) is None    # ratio 3 is not > 3
    assert separate_z_axis((4.0, 4.0, 1.0), (1.0, 1.0, 1.0)) is None    # two equally coarse axes
    # the original decides when it is anisotropic, even if the target has one coarse axis
    assert separate_z_axis((4.0, 4.0, 1.0), (5.0, 1.0, 1.0)) is None
    assert separate_z_axis((3.0, 1.0, 1.0), (3.0, 1.0, 1.0), threshold=2.5) == 0


def test_resample_volume_orders_plane_then_separate_axis():
    # separate axis 2 with nearest: every x column is a copy of the plane result
    volume = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    full, plane = resample_volume(volume, (8, 8, 6), 1, separate_axis=2, order_z=0, keep_plane_result=True)
    assert plane.shape == (8, 8, 3) and full.shape == (8, 8, 6)
    assert np.array_equal(full, np.repeat(plane, 2, axis=2))


# ------------------------------------------------------------------------------------- segmentations

def _sphere(shape, spacing, radius_mm, value=1):
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [n * s / 2 for n, s in zip(shape, spacing)]
    inside = sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius_mm ** 2
    seg = np.zeros(shape, np.int16)
    seg[inside] = value
    return seg


@pytest.mark.parametrize("separate", [False, True])
def test_blob_keeps_its_volume_in_mm3(separate):
    spacing, target = (3.0, 0.8, 0.8), (1.0, 1.0, 1.0)
    seg = _sphere((12, 45, 45), spacing, 12.0)
    new_shape = shape_at_spacing(seg.shape, spacing, target)
    assert new_shape == [36, 36, 36]
    axis = separate_z_axis(spacing, target) if separate else None
    assert axis == (0 if separate else None)
    result = resample_segmentation(seg, new_shape, separate_axis=axis)
    assert result.dtype == np.int8 and result.shape == (36, 36, 36)
    before = np.count_nonzero(seg) * 3.0 * 0.8 * 0.8
    after = np.count_nonzero(result) * 1.0
    assert after == pytest.approx(before, rel=0.05)


def test_labels_stay_within_the_original_set_and_minus_one_survives():
    seg = np.zeros((10, 24, 24), np.int16)
    seg[:, :3] = -1                 # outside the nonzero mask
    seg[:, -3:] = -1
    seg[2:8, 6:14, 4:12] = 1
    seg[3:7, 9:13, 12:20] = 2
    new_shape = shape_at_spacing(seg.shape, (2.0, 1.0, 1.0), (1.3, 0.7, 0.9))
    result = resample_segmentation(seg, new_shape)
    assert set(np.unique(result).tolist()) == {-1, 0, 1, 2}
    # the -1 band: 6 of 24 rows, about a quarter of the volume, before and after
    assert np.mean(result == -1) == pytest.approx(np.mean(seg == -1), abs=0.03)
    assert np.all(result[:, 0] == -1) and np.all(result[:, -1] == -1)


def test_labels_do_not_appear_from_nowhere_when_downsampling():
    rng = np.random.default_rng(5)
    seg = rng.choice(np.array([0, 1, 3], np.int16), size=(8, 20, 20))
    result = resample_segmentation(seg, (5, 11, 13))
    assert set(np.unique(result).tolist()) <= {0, 1, 3}


def test_keep_plane_result_returns_the_plane_pass():
    seg = _sphere((12, 45, 45), (3.0, 0.8, 0.8), 12.0)
    full, plane = resample_segmentation(seg, (36, 36, 36), separate_axis=0, order_z=0, keep_plane_result=True)
    assert full.shape == (36, 36, 36)
    assert plane.shape == (12, 36, 36)  # axis 0 keeps its original length
    assert plane.dtype == np.int8 and set(np.unique(plane).tolist()) == {0, 1}
    # nearest along z, 12 -> 36: output slice j reads plane slice floor((j + 0.5) / 3) = j // 3
    assert np.array_equal(full, np.repeat(plane, 3, axis=0))
    # without a separate axis the plane pass is still axes 1 and 2, with axis 0 untouched
    full, plane = resample_segmentation(seg, (36, 36, 36), keep_plane_result=True)
    assert plane.shape == (12, 36, 36) and full.shape == (36, 36, 36)


def test_keep_plane_result_with_another_separate_axis():
    seg = np.zeros((10, 12, 4), np.int16)
    seg[2:8, 3:9, 1:3] = 1
    full, plane = resample_segmentation(seg, (20, 24, 12), separate_axis=2, keep_plane_result=True)
    assert plane.shape == (20, 24, 4) and full.shape == (20, 24, 12)


def test_empty_segmentation():
    result = resample_segmentation(np.zeros((4, 5, 6), np.int16), (8, 10, 12))
    assert result.shape == (8, 10, 12) and not result.any()


# ------------------------------------------------------------------------------------- normalization

def test_ct_normalization_clips_then_standardizes():
    channel = np.array([-1000, 0, 50, 100, 3000], np.float32)
    plan = NormalizationPlan("ct", clip_low=-100.0, clip_high=200.0, mean=50.0, std=25.0)
    # clip -> [-100, 0, 50, 100, 200]; (x - 50) / 25
    assert normalize_channel(channel, plan).tolist() == [-6, -2, 0, 2, 6]


def test_ct_window_scales_to_0_1():
    channel = np.array([-1000, -200, 150, 500, 1000], np.float32)
    plan = NormalizationPlan("ct_window", clip_low=-200.0, clip_high=500.0)
    # clip to [-200, 500], (x + 200) / 700: 350 / 700 = 0.5
    assert normalize_channel(channel, plan).tolist() == [0, 0, 0.5, 1, 1]


def test_zscore_without_mask():
    channel = np.array([2, 4, 4, 4, 5, 5, 7, 9], np.float32)  # mean 5, std 2
    result = normalize_channel(channel, NormalizationPlan("zscore"))
    assert result.tolist() == pytest.approx([-1.5, -0.5, -0.5, -0.5, 0, 0, 1, 2])


def test_zscore_ignores_the_mask_unless_asked():
    channel = np.array([0, 0, 1, 3], np.float32)  # mean 1, std sqrt((1 + 1 + 0 + 4) / 4) = sqrt(1.5)
    inside = np.array([False, False, True, True])
    result = normalize_channel(channel, NormalizationPlan("zscore", use_nonzero_mask=False), inside)
    assert result.tolist() == pytest.approx([-1 / np.sqrt(1.5), -1 / np.sqrt(1.5), 0, 2 / np.sqrt(1.5)])


def test_zscore_inside_the_nonzero_mask():
    # inside values 1, 3: mean 2, std 1 -> -1, 1; outside -> 0
    channel = np.array([0, 0, 1, 3], np.float32)
    inside = np.array([False, False, True, True])
    result = normalize_channel(channel, NormalizationPlan("zscore", use_nonzero_mask=True), inside)
    assert result.tolist() == [0, 0, -1, 1]


def test_zscore_mask_with_zeros_inside_and_values_outside():
    # inside values 0, 1, 3: mean 4/3, variance (16 + 1 + 25) / 27 = 14/9 -> std sqrt(14)/3
    channel = np.array([0, 5, 0, 1, 3], np.float32)
    inside = np.array([False, False, True, True, True])
    result = normalize_channel(channel, NormalizationPlan("zscore", use_nonzero_mask=True), inside)
    std = np.sqrt(14) / 3
    assert result.tolist() == pytest.approx([0, 0, -4 / 3 / std, -1 / 3 / std, 5 / 3 / std], abs=1e-6)


def test_rescale_and_rgb_and_none():
    assert normalize_channel(np.array([2, 4, 6], np.float32), NormalizationPlan("rescale_0_1")).tolist() == [0, 0.5, 1]
    assert normalize_channel(np.array([0, 51, 255], np.float32), NormalizationPlan("rgb_0_1")).tolist() == \
        pytest.approx([0, 0.2, 1])
    assert normalize_channel(np.array([7, -3], np.float32), NormalizationPlan("none")).tolist() == [7, -3]
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_channel(np.zeros(2, np.float32), NormalizationPlan("bogus"))


def test_slab_by_slab_resampling_equals_one_slab(monkeypatch):
    """Tiny slabs (one output slice each) give the same result as one big slab."""
    from boxunet.preprocessing import resampling
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(9, 14, 11)).astype(np.float32)
    seg = (rng.random((9, 14, 11)) > 0.6).astype(np.int8) * 2
    expected = resample_volume(volume, (13, 10, 16), 3, keep_plane_result=True)
    expected_seg = resample_segmentation(seg, (13, 10, 16), separate_axis=0, keep_plane_result=True)
    monkeypatch.setattr(resampling, "CHUNK_ELEMENTS", 1)
    got = resample_volume(volume, (13, 10, 16), 3, keep_plane_result=True)
    got_seg = resample_segmentation(seg, (13, 10, 16), separate_axis=0, keep_plane_result=True)
    for a, b in zip(expected + expected_seg, got + got_seg):
        assert np.allclose(a, b, atol=1e-5)


def test_normalizing_slabs_while_resampling_equals_normalizing_first():
    from boxunet.preprocessing.normalization import channel_normalizer
    rng = np.random.default_rng(4)
    channel = rng.integers(0, 500, size=(6, 12, 10)).astype(np.int16)
    inside = np.ones(channel.shape, bool)
    inside[:, :2] = False
    plan = NormalizationPlan("zscore", use_nonzero_mask=True)
    whole = normalize_channel(channel.astype(np.float32), plan, inside)
    normalizer = channel_normalizer(channel, plan, inside)
    slabbed = resample_volume(channel, (6, 12, 10), 3,
                              read=lambda region: normalizer(channel[region].astype(np.float32), inside[region]))
    assert np.allclose(slabbed, whole, atol=1e-5)
    assert whole[inside].mean() == pytest.approx(0.0, abs=1e-5) and whole[inside].std() == pytest.approx(1.0, abs=1e-4)
