"""Planning: spacing, topology, patch/batch size, normalization and the experiment planner.

Every expected number below is derived by hand from the rule documented in the module (the derivation
is in the comment next to it), not copied from the code's output.
"""
import json
import math

import numpy as np
import pytest

from boxunet.errors import BoxunetError
from boxunet.io.dataset_json import parse_dataset_json
from boxunet.planning.normalization import plan_normalization
from boxunet.planning.patch_size import feature_map_estimate, plan_patch_and_batch
from boxunet.planning.planner import plan_experiment, plans_summary
from boxunet.planning.plans import Plans
from boxunet.planning.spacing import target_spacing, transpose_for
from boxunet.planning.topology import Topology, features_per_stage, plan_topology


# --------------------------------------------------------------------------------------------- spacing

def test_target_spacing_is_the_per_axis_median():
    spacings = [[1.0, 0.5, 0.6], [2.0, 0.7, 0.7], [3.0, 0.9, 0.8]]
    shapes = [[100, 200, 200]] * 3
    # medians 2.0 / 0.7 / 0.7; 2.0 > 3 * 0.7 = 2.1 is false -> no anisotropy rule
    assert target_spacing(spacings, shapes) == pytest.approx([2.0, 0.7, 0.7])


def test_target_spacing_even_count_median_averages_the_middle_two():
    spacings = [[1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [3.0, 1.0, 1.0], [4.0, 1.0, 1.0]]
    assert target_spacing(spacings, [[50, 50, 50]] * 4) == pytest.approx([2.5, 1.0, 1.0])


def test_anisotropic_axis_gets_its_10th_percentile():
    # axis 0 spacings sorted [2, 4, 5, 5, 6]: median 5 > 3 * 0.8 and median size 40 * 3 = 120 < 512.
    # 10th percentile (linear): position 0.1 * (5 - 1) = 0.4 -> 2 + 0.4 * (4 - 2) = 2.8 (>= 0.8, no clamp)
    spacings = [[5.0, 0.8, 0.8], [2.0, 0.8, 0.8], [6.0, 0.8, 0.8], [4.0, 0.8, 0.8], [5.0, 0.8, 0.8]]
    shapes = [[40, 512, 512]] * 5
    assert target_spacing(spacings, shapes) == pytest.approx([2.8, 0.8, 0.8])


def test_anisotropic_axis_on_the_last_axis():
    # same numbers with the coarse axis last; the other two axes keep their medians (0.7 and 0.9)
    spacings = [[0.7, 0.9, 5.0], [0.7, 0.9, 2.0], [0.7, 0.9, 6.0], [0.7, 0.9, 4.0], [0.7, 0.9, 5.0]]
    shapes = [[300, 300, 60]] * 5  # 60 * 3 = 180 < 300
    assert target_spacing(spacings, shapes) == pytest.approx([0.7, 0.9, 2.8])


def test_anisotropic_axis_is_clamped_to_the_largest_other_spacing_plus_1e5():
    # axis 0 sorted [0.2, 0.6, 5, 5, 5]: median 5 > 3 * 1.0; 10th pct = 0.2 + 0.4 * 0.4 = 0.36 < 1.0
    # -> clamped to max(other medians) + 1e-5 = 1.0 + 1e-5 (largest other is axis 1: 1.0, axis 2: 0.9)
    spacings = [[0.2, 1.0, 0.9], [0.6, 1.0, 0.9], [5.0, 1.0, 0.9], [5.0, 1.0, 0.9], [5.0, 1.0, 0.9]]
    shapes = [[20, 256, 256]] * 5
    result = target_spacing(spacings, shapes)
    assert result[0] == pytest.approx(1.0 + 1e-5, abs=1e-9)
    assert result[1:] == pytest.approx([1.0, 0.9])


def test_anisotropic_axis_equal_to_largest_other_is_not_bumped():
    # 10th percentile exactly 1.0 (= largest other): not below it, so no +1e-5
    spacings = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [5.0, 1.0, 1.0], [5.0, 1.0, 1.0], [5.0, 1.0, 1.0]]
    shapes = [[20, 256, 256]] * 5
    assert target_spacing(spacings, shapes)[0] == 1.0


def test_anisotropic_spacing_but_many_slices_keeps_the_median():
    # median 5 > 3 * 0.8 but the median size 200 * 3 = 600 is not < 512 -> plain median
    spacings = [[5.0, 0.8, 0.8], [2.0, 0.8, 0.8], [6.0, 0.8, 0.8], [4.0, 0.8, 0.8], [5.0, 0.8, 0.8]]
    shapes = [[200, 512, 512]] * 5
    assert target_spacing(spacings, shapes) == pytest.approx([5.0, 0.8, 0.8])


def test_few_slices_but_moderate_spacing_keeps_the_median():
    # 40 * 3 < 512 but the median spacing 2.0 is not > 3 * 0.8 = 2.4 -> plain median
    spacings = [[2.0, 0.8, 0.8], [1.0, 0.8, 0.8], [2.2, 0.8, 0.8]]
    shapes = [[40, 512, 512]] * 3
    assert target_spacing(spacings, shapes) == pytest.approx([2.0, 0.8, 0.8])


def test_transpose_puts_the_coarsest_axis_first():
    assert transpose_for([0.8, 0.8, 5.0]) == ([2, 0, 1], [1, 2, 0])
    assert transpose_for([0.8, 5.0, 0.8]) == ([1, 0, 2], [1, 0, 2])
    assert transpose_for([5.0, 0.8, 0.8]) == ([0, 1, 2], [0, 1, 2])
    assert transpose_for([1.0, 1.0, 1.0]) == ([0, 1, 2], [0, 1, 2])  # ties: the first axis


def test_transpose_backward_undoes_forward():
    forward, backward = transpose_for([0.8, 0.9, 5.0])
    shape = np.array([10, 20, 30])
    assert shape[forward][backward].tolist() == [10, 20, 30]


def test_topology_anisotropic_hand_derived():
    # stage 0: spacing (3, .8, .8); 3 > 2 * .8 -> axis 0 not within 2x: kernel [1,3,3], stride [1,2,2]
    # stage 1: spacing (3, 1.6, 1.6); 3 <= 3.2 -> all within: kernel 3, stride [2,2,2]  size (40, 80, 80)
    # stage 2: (6, 3.2, 3.2) size (20, 40, 40) -> stride [2,2,2]
    # stage 3: (12, 6.4, 6.4) size (10, 20, 20) -> stride [2,2,2]
    # stage 4: (24, 12.8, 12.8) size (5, 10, 10): 5 < 2 * 4 -> stride [1,2,2]
    # stage 5: size (5, 5, 5): nothing poolable -> bottleneck
    topology = plan_topology([3.0, 0.8, 0.8], [40, 160, 160])
    assert topology.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert topology.kernel_sizes == [[1, 3, 3]] + [[3, 3, 3]] * 5
    assert topology.n_stages == 6
    assert topology.total_stride == [8, 32, 32]
    assert topology.patch_size == [40, 160, 160]  # already a multiple of (8, 32, 32)


def test_topology_rounds_the_patch_up_to_the_total_stride():
    # (42, 150, 150) pools exactly like (40, 160, 160) (sizes 42/42/21/10.5/5.25 and 150/75/.../4.7)
    # -> total stride (8, 32, 32): ceil(42 / 8) * 8 = 48, ceil(150 / 32) * 32 = 160
    topology = plan_topology([3.0, 0.8, 0.8], [42, 150, 150])
    assert topology.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert topology.patch_size == [48, 160, 160]


def test_topology_isotropic_128_has_six_stages():
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: pooled while size >= 2 * 4, i.e. 5 poolings
    topology = plan_topology([1.0, 1.0, 1.0], [128, 128, 128])
    assert topology.strides == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert topology.kernel_sizes == [[3, 3, 3]] * 6
    assert topology.patch_size == [128, 128, 128]


def test_topology_bottleneck_kernel_is_always_3():
    # spacing (10, 1, 1): axis 0 never gets within 2x before pooling stops
    # stage 0: kernel [1,3,3] stride [1,2,2] -> (10, 2, 2) size (4, 8, 8)
    # stage 1: 10 > 4 -> kernel [1,3,3] stride [1,2,2] -> (10, 4, 4) size (4, 4, 4)
    # stage 2: 10 > 8 would give [1,3,3] but it is the bottleneck -> [3,3,3]
    topology = plan_topology([10.0, 1.0, 1.0], [4, 16, 16])
    assert topology.strides == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]
    assert topology.kernel_sizes == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    assert topology.patch_size == [4, 16, 16]


def test_topology_max_poolings():
    topology = plan_topology([1.0, 1.0, 1.0], [128, 128, 128], max_poolings=2)
    assert topology.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    assert topology.kernel_sizes == [[3, 3, 3]] * 3


def test_topology_2d():
    # 512 pooled at 512, 256, ..., 8 -> 7 poolings, 8 stages
    topology = plan_topology([0.5, 0.5], [512, 512])
    assert topology.n_stages == 8
    assert topology.total_stride == [128, 128]


def test_features_per_stage_caps():
    assert features_per_stage(6, 3) == [32, 64, 128, 256, 320, 320]
    assert features_per_stage(8, 2) == [32, 64, 128, 256, 512, 512, 512, 512]
    assert features_per_stage(3, 3, base=16) == [16, 32, 64]


# ----------------------------------------------------------------------------------- patch and batch

def test_feature_map_estimate_tiny_hand_computed():
    # voxels per stage: 8^3 = 512 and 4^3 = 64
    # encoder: 2 convs per stage: 2*32*512 + 2*64*64 = 32768 + 8192 = 40960
    # decoder (stage 0 only): transposed conv + 2 convs = 3*32*512 = 49152, deep supervision 3*512 = 1536
    topology = Topology(strides=[[1, 1, 1], [2, 2, 2]], kernel_sizes=[[3, 3, 3]] * 2, patch_size=[8, 8, 8])
    assert feature_map_estimate(topology, [32, 64], 3) == 40960 + 49152 + 1536


def test_feature_map_estimate_anisotropic_strides():
    # patch (4, 8, 8), strides [1,1,1], [1,2,2], [2,2,2]: voxels 256, 64, 8
    # encoder 2*(16*256 + 32*64 + 64*8) = 2*(4096 + 2048 + 512) = 13312
    # decoder 3*(16*256 + 32*64) = 18432; deep supervision 2*(256 + 64) = 640
    topology = Topology(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], kernel_sizes=[[3, 3, 3]] * 3,
                        patch_size=[4, 8, 8])
    assert feature_map_estimate(topology, [16, 32, 64], 2) == 13312 + 18432 + 640


KITS_SPACING = [1.0, 0.78125, 0.78125]
KITS_SHAPE = [527, 512, 512]
KITS_VOXELS = 489 * 527 * 512 * 512.0


def test_kits23_like_3d_fullres_patch_and_batch():
    # nnU-Net calibration point: 128^3, batch 2. The estimate of that network (6 stages, features
    # 32, 64, 128, 256, 320, 320, 4 classes), by hand, with voxels 2097152, 262144, 32768, 4096, 512, 64:
    # encoder 2 * 89313280 = 178626560; decoder 3 * 89292800 = 267878400; seg outputs 4 * 2396672 = 9586688
    plan = plan_patch_and_batch(KITS_SPACING, KITS_SHAPE, 4, 8.0, KITS_VOXELS)
    assert plan.topology.patch_size == [128, 128, 128]
    assert plan.features == [32, 64, 128, 256, 320, 320]
    assert plan.estimate == 178626560 + 267878400 + 9586688
    # batch = round(560e6 / 456091648 * 2) = round(2.456) = 2
    assert plan.batch_size == 2


def test_kits23_like_2d_patch_and_batch():
    # 512^2 clipped to the median image; 8 stages, features 32..512 with voxels 262144 / 4^k:
    # encoder 2 * 16424960 = 32849920; decoder 3 * (16424960 - 8192) = 49250304;
    # seg outputs 4 * 349504 = 1398016 -> 83498240; batch = round(85e6 / 83498240 * 12) = round(12.2) = 12
    plan = plan_patch_and_batch([0.78125, 0.78125], [512, 512], 4, 8.0, KITS_VOXELS)
    assert plan.topology.patch_size == [512, 512]
    assert plan.features == [32, 64, 128, 256, 512, 512, 512, 512]
    assert plan.estimate == 32849920 + 49250304 + 1398016
    assert plan.batch_size == 12


def _estimate_64_cubed_2_classes():
    # 5 stages (64 -> 4), features 32, 64, 128, 256, 320; voxels 262144, 32768, 4096, 512, 64
    encoder = 2 * (32 * 262144 + 64 * 32768 + 128 * 4096 + 256 * 512 + 320 * 64)  # 22323200
    decoder = 3 * (32 * 262144 + 64 * 32768 + 128 * 4096 + 256 * 512)  # 33423360
    outputs = 2 * (262144 + 32768 + 4096 + 512)  # 599040
    return encoder + decoder + outputs  # 56345600


@pytest.mark.parametrize("num_cases, expected_batch", [
    (10, 2),     # floor(0.05 * 10 * 64^3 / 64^3) = 0 -> never below 2
    (100, 5),    # floor(0.05 * 100) = 5 < round(560e6 / 56345600 * 2) = round(19.88) = 20
    (1000, 20),  # the cap (50) does not bind -> 20
])
def test_dataset_fraction_caps_the_batch(num_cases, expected_batch):
    plan = plan_patch_and_batch([1.0, 1.0, 1.0], [64, 64, 64], 2, 8.0, num_cases * 64 ** 3)
    assert plan.topology.patch_size == [64, 64, 64]  # the whole median image
    assert plan.estimate == _estimate_64_cubed_2_classes()
    assert plan.batch_size == expected_batch


def test_smaller_memory_gives_a_smaller_patch():
    large = plan_patch_and_batch(KITS_SPACING, KITS_SHAPE, 4, 8.0, KITS_VOXELS)
    small = plan_patch_and_batch(KITS_SPACING, KITS_SHAPE, 4, 1.0, KITS_VOXELS)
    assert np.prod(small.topology.patch_size) < np.prod(large.topology.patch_size)
    assert small.estimate <= 560e6 / 8  # the 1 GB budget for a batch of 2
    assert small.batch_size >= 2
    assert all(p % s == 0 for p, s in zip(small.topology.patch_size, small.topology.total_stride))


def test_initial_patch_follows_the_physical_aspect_and_the_median_image():
    # spacing (2, 1, 1): aspect 1/spacing = (0.5, 1, 1) / 0.5^(1/3) -> (0.63, 1.26, 1.26) * 256
    # = (161.3, 322.5, 322.5), clipped to the median image (40, 100, 100) -> fits any budget
    plan = plan_patch_and_batch([2.0, 1.0, 1.0], [40, 100, 100], 2, 8.0, 1e9)
    # topology of (40, 100, 100) at (2, 1, 1): 2 is not < 2 * 1, so axis 0 waits one stage (kernel 1):
    # (40, 100, 100) -[1,2,2]-> (40, 50, 50) at (2, 2, 2) -> (20, 25, 25) -> (10, 13, 13) -> (5, 7, 7), stop
    # -> total stride (8, 16, 16): patch (40, ceil(100 / 16) * 16 = 112, 112)
    assert plan.topology.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert plan.topology.kernel_sizes == [[1, 3, 3]] + [[3, 3, 3]] * 4
    assert plan.topology.patch_size == [40, 112, 112]


# ------------------------------------------------------------------------------------ normalization

CT_STATS = {"mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 3000.0,
            "percentile_00_5": -80.0, "percentile_99_5": 300.0}
MR_STATS = {"mean": 400.0, "median": 380.0, "std": 120.0, "min": 0.0, "max": 2000.0,
            "percentile_00_5": 10.0, "percentile_99_5": 1500.0}


def _fingerprint(spacings, shapes, relative_size=0.9, stats=None):
    return {"spacings": [list(map(float, s)) for s in spacings], "shapes_after_crop": [list(s) for s in shapes],
            "median_relative_size_after_cropping": relative_size,
            "foreground_intensity_properties_per_channel": stats or {"0": dict(CT_STATS)}}


def _description(channels=None, labels=None, box_labels=None):
    data = {"channel_names": channels or {"0": "CT"},
            "labels": labels or {"background": 0, "kidney": 1, "tumor": 2},
            "numTraining": 10, "file_ending": ".nii.gz"}
    if box_labels:
        data["box_labels"] = box_labels
    return parse_dataset_json(data)


def test_ct_normalization_copies_the_fingerprint():
    plan, = plan_normalization({0: "CT"}, _fingerprint([[1, 1, 1]], [[10, 10, 10]]))
    assert (plan.scheme, plan.clip_low, plan.clip_high, plan.mean, plan.std) == ("ct", -80.0, 300.0, 100.0, 50.0)
    assert not plan.use_nonzero_mask


def test_ct_window_normalization():
    plan, = plan_normalization({0: "ct"}, _fingerprint([[1, 1, 1]], [[10, 10, 10]]), ct_window=(-200, 500))
    assert (plan.scheme, plan.clip_low, plan.clip_high, plan.mean, plan.std) == ("ct_window", -200.0, 500.0, None, None)


def test_ct_window_must_be_increasing():
    with pytest.raises(BoxunetError, match="low value must be below"):
        plan_normalization({0: "CT"}, _fingerprint([[1, 1, 1]], [[10, 10, 10]]), ct_window=(500, -200))


@pytest.mark.parametrize("relative_size, use_mask", [(0.6, True), (0.7499, True), (0.75, False), (0.9, False)])
def test_zscore_uses_the_nonzero_mask_when_cropping_shrank_the_images(relative_size, use_mask):
    stats = {"0": dict(MR_STATS), "1": dict(CT_STATS)}
    plans = plan_normalization({0: "T2", 1: "CT", 2: "noNorm"},
                               _fingerprint([[1, 1, 1]], [[10, 10, 10]], relative_size, stats))
    assert [p.scheme for p in plans] == ["zscore", "ct", "none"]
    assert plans[0].use_nonzero_mask is use_mask
    assert not plans[1].use_nonzero_mask and not plans[2].use_nonzero_mask
    # the CT channel is channel 1: its statistics come from fingerprint channel "1"
    assert (plans[1].clip_low, plans[1].clip_high, plans[1].mean, plans[1].std) == (-80.0, 300.0, 100.0, 50.0)


# ---------------------------------------------------------------------------------------- planner

def _large_anisotropic_ct():
    # 10 cases, coarse axis last (x). x spacings sorted [3, 4, 5 x 7, 6]: median 5 > 3 * 0.8 and the
    # median size 100 * 3 < 512 -> 10th percentile: position 0.9 -> 3 + 0.9 * (4 - 3) = 3.9
    x_spacings = [5.0, 3.0, 5.0, 6.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    spacings = [[0.8, 0.8, s] for s in x_spacings]
    shapes = [[512, 512, 100]] * 10
    return _fingerprint(spacings, shapes, relative_size=0.9)


@pytest.fixture(scope="module")
def large_plans():
    return plan_experiment(_large_anisotropic_ct(), _description(), "Dataset001_Large")


def test_large_dataset_transposes_and_uses_the_anisotropic_target(large_plans):
    plans = large_plans
    assert plans.transpose_forward == [2, 0, 1] and plans.transpose_backward == [1, 2, 0]
    fullres = plans.configurations["3d_fullres"]
    assert fullres.spacing == pytest.approx([3.9, 0.8, 0.8])
    # median extent along x: median of 100 * s / 3.9 over the cases = 500 / 3.9 = 128.2
    assert fullres.median_image_size_in_voxels == pytest.approx([128.2, 512.0, 512.0])
    assert plans.original_median_spacing_after_transp == pytest.approx([5.0, 0.8, 0.8])
    assert plans.original_median_shape_after_transp == pytest.approx([100, 512, 512])


def test_large_dataset_gets_a_cascade(large_plans):
    plans = large_plans
    assert set(plans.configurations) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    fullres = plans.configurations["3d_fullres"]
    lowres = plans.configurations["3d_lowres"]
    cascade = plans.configurations["3d_cascade_fullres"]
    # the full-resolution patch covers less than 25% of the median image (that is why lowres exists)
    assert np.prod(fullres.patch_size) / np.prod(fullres.median_image_size_in_voxels) < 0.25
    # lowres: coarser (never finer) spacing, patch covering >= 25% of its median image,
    # at least 2x fewer voxels in the median image than fullres
    assert all(lo >= full for lo, full in zip(lowres.spacing, fullres.spacing))
    assert any(lo > full for lo, full in zip(lowres.spacing, fullres.spacing))
    assert np.prod(lowres.patch_size) / np.prod(lowres.median_image_size_in_voxels) >= 0.25
    assert np.prod(fullres.median_image_size_in_voxels) / np.prod(lowres.median_image_size_in_voxels) >= 2
    # nnU-Net's step rule: axes more than 2x finer than the coarsest grow by 1.03 per step, so the
    # coarse axis stays at 3.9 (3.9 / 0.8 > 2 holds until the plane reaches 1.95) and y, x = 0.8 * 1.03^k
    assert lowres.spacing[0] == pytest.approx(3.9)
    assert lowres.spacing[1] == pytest.approx(lowres.spacing[2])
    steps = math.log(lowres.spacing[1] / 0.8) / math.log(1.03)
    assert steps == pytest.approx(round(steps), abs=1e-6) and round(steps) >= 1
    assert lowres.batch_dice is False and fullres.batch_dice is True and cascade.batch_dice is True
    assert lowres.next_stage == "3d_cascade_fullres" and lowres.data_identifier == "boxunetPlans_3d_lowres"
    assert cascade.previous_stage == "3d_lowres" and cascade.inherits_from == "3d_fullres"
    assert cascade.data_identifier == fullres.data_identifier == "boxunetPlans_3d_fullres"
    assert cascade.spacing == fullres.spacing and cascade.patch_size == fullres.patch_size


def test_every_patch_is_divisible_by_its_total_stride(large_plans):
    for configuration in large_plans.configurations.values():
        architecture = configuration.architecture
        total = np.prod(np.asarray(architecture.strides), axis=0)
        assert all(p % t == 0 for p, t in zip(configuration.patch_size, total)), configuration.name
        assert len(architecture.kernel_sizes) == len(architecture.strides) == architecture.n_stages
        assert architecture.n_conv_per_stage_decoder == [2] * (architecture.n_stages - 1)
        assert configuration.batch_size >= 2


def test_2d_configuration(large_plans):
    plane = large_plans.configurations["2d"]
    assert plane.resample_out_of_plane is False
    assert plane.spacing == pytest.approx([0.8, 0.8])
    assert plane.median_image_size_in_voxels == pytest.approx([512.0, 512.0])
    assert plane.architecture.conv_dim == 2 and plane.batch_dice is True
    assert all(c.resample_out_of_plane for name, c in large_plans.configurations.items() if name != "2d")


def test_large_dataset_ct_normalization(large_plans):
    normalization, = large_plans.normalization
    assert (normalization.scheme, normalization.clip_low, normalization.clip_high, normalization.mean,
            normalization.std) == ("ct", -80.0, 300.0, 100.0, 50.0)


def test_small_dataset_has_no_lowres():
    # 64^3 at 1 mm: the fullres patch is the whole median image -> no cascade, no batch dice
    plans = plan_experiment(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[64, 64, 64]] * 5), _description(), "D2")
    assert set(plans.configurations) == {"2d", "3d_fullres"}
    fullres = plans.configurations["3d_fullres"]
    assert fullres.batch_dice is False
    assert fullres.patch_size == [64, 64, 64]
    assert fullres.spacing == [1.0, 1.0, 1.0]
    assert plans.transpose_forward == [0, 1, 2]


def test_ct_window_and_other_options():
    plans = plan_experiment(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[64, 64, 64]] * 5), _description(), "D2",
                            ct_window=(-200, 500), plans_name="myPlans")
    normalization, = plans.normalization
    assert (normalization.scheme, normalization.clip_low, normalization.clip_high) == ("ct_window", -200.0, 500.0)
    assert plans.plans_name == "myPlans"
    assert plans.configurations["3d_fullres"].data_identifier == "myPlans_3d_fullres"
    assert plans.configurations["2d"].data_identifier == "myPlans_2d"


def test_non_ct_channel_gets_zscore_with_mask():
    stats = {"0": dict(MR_STATS)}
    plans = plan_experiment(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[64, 64, 64]] * 5, 0.5, stats),
                            _description(channels={"0": "T2"}), "D3")
    normalization, = plans.normalization
    assert normalization.scheme == "zscore" and normalization.use_nonzero_mask is True
    assert plans.num_input_channels == 1


def test_target_spacing_override_and_bad_memory():
    fingerprint = _fingerprint([[1.0, 1.0, 1.0]] * 5, [[64, 64, 64]] * 5)
    plans = plan_experiment(fingerprint, _description(), "D", target_spacing_override=[2.0, 1.0, 1.0])
    fullres = plans.configurations["3d_fullres"]
    assert fullres.spacing == [2.0, 1.0, 1.0]
    assert fullres.median_image_size_in_voxels == [32.0, 64.0, 64.0]  # 64 * 1 / 2
    with pytest.raises(BoxunetError, match="must have 3 values"):
        plan_experiment(fingerprint, _description(), "D", target_spacing_override=[2.0, 1.0])
    with pytest.raises(BoxunetError, match="gpu-memory-gb"):
        plan_experiment(fingerprint, _description(), "D", memory_gb=0)


def test_plans_json_round_trip(large_plans):
    data = json.loads(json.dumps(large_plans.to_json()))
    restored = Plans.from_json(data)
    assert restored == large_plans
    assert restored.configurations["3d_cascade_fullres"].previous_stage == "3d_lowres"


def test_plans_keep_labels_and_box_labels():
    plans = plan_experiment(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[64, 64, 64]] * 5),
                            _description(box_labels=[2]), "D")
    assert plans.labels == {"background": 0, "kidney": 1, "tumor": 2}
    assert plans.label_set.values == [0, 1, 2]
    assert plans.box_labels == [2]
    with pytest.raises(BoxunetError, match="3d_lowres"):
        plans.configuration("3d_lowres")


def test_plans_summary_mentions_every_configuration(large_plans):
    summary = plans_summary(large_plans)
    for name in large_plans.configurations:
        assert f"  {name}: spacing" in summary
    assert "Dataset001_Large" in summary and "normalization ct" in summary
    assert "previous stage 3d_lowres" in summary
