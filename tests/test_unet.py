"""The plain U-Net: shapes, structure, parameter count, memory estimate, deep-supervision scales.

Networks are tiny (a few feature maps, patches of a few thousand voxels) to keep the tests fast on CPU.
"""
import pytest
import torch
from torch import nn

from boxunet.errors import BoxunetError
from boxunet.nets.unet import UNet, build_network, deep_supervision_scales
from boxunet.planning.patch_size import feature_map_estimate
from boxunet.planning.plans import ArchitecturePlan
from boxunet.planning.topology import features_per_stage, plan_topology


def plan_3d(features=(4, 8, 16, 16)) -> ArchitecturePlan:
    return ArchitecturePlan(
        conv_dim=3, features_per_stage=list(features),
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2, 2, 2, 2], n_conv_per_stage_decoder=[2, 2, 2])


def plan_2d() -> ArchitecturePlan:
    return ArchitecturePlan(conv_dim=2, features_per_stage=[4, 8, 8], kernel_sizes=[[3, 3]] * 3,
                            strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2],
                            n_conv_per_stage_decoder=[1, 1])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_3d_output_shapes_with_deep_supervision():
    net = build_network(plan_3d(), num_input_channels=2, num_outputs=3)
    outputs = net(torch.randn(1, 2, 16, 32, 32))
    # cumulative strides per decoder stage: (1,1,1), (1,2,2), (2,4,4) -> one output per decoder stage
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 16, 32, 32), (1, 3, 16, 16, 16), (1, 3, 8, 8, 8)]


def test_3d_output_shape_without_deep_supervision_and_toggle():
    net = build_network(plan_3d(), 2, 3, deep_supervision=False)
    x = torch.randn(1, 2, 16, 32, 32)
    assert net(x).shape == (1, 3, 16, 32, 32)
    net.set_deep_supervision(True)
    assert len(net(x)) == 3


def test_2d_output_shapes():
    net = build_network(plan_2d(), num_input_channels=1, num_outputs=2)
    outputs = net(torch.randn(2, 1, 16, 12))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 16, 12), (2, 2, 8, 6)]


def test_encode_decode_hooks():
    net = build_network(plan_3d(), 2, 3)
    skips = net.encode(torch.randn(1, 2, 16, 32, 32))
    assert [tuple(s.shape) for s in skips] == [(1, 4, 16, 32, 32), (1, 8, 16, 16, 16), (1, 16, 8, 8, 8),
                                               (1, 16, 4, 4, 4)]
    features = net.decode(skips)
    assert [tuple(f.shape) for f in features] == [(1, 4, 16, 32, 32), (1, 8, 16, 16, 16), (1, 16, 8, 8, 8)]


def test_backward_reaches_every_parameter():
    net = build_network(plan_3d(), 2, 3)
    sum(o.square().mean() for o in net(torch.randn(2, 2, 16, 32, 32))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_first_conv_of_each_stage_is_strided_and_padding_keeps_size():
    net = build_network(plan_3d(), 2, 3)
    first, second = net.encoder[1][0][0], net.encoder[1][1][0]
    assert first.stride == (1, 2, 2) and second.stride == (1, 1, 1)
    assert net.encoder[0][0][0].kernel_size == (1, 3, 3) and net.encoder[0][0][0].padding == (0, 1, 1)
    assert isinstance(net.encoder[0][0][1], nn.InstanceNorm3d) and net.encoder[0][0][1].affine
    assert net.encoder[0][0][2].negative_slope == 0.01
    # decoding order: upsample[0] goes from the bottleneck (16) to stage 2 (16), upsample[2] from 8 to 4
    assert net.upsample[2].in_channels == 8 and net.upsample[2].out_channels == 4
    assert net.upsample[2].kernel_size == net.upsample[2].stride == (1, 2, 2)


def test_parameter_count_of_a_tiny_2_stage_network():
    plan = ArchitecturePlan(conv_dim=2, features_per_stage=[2, 4], kernel_sizes=[[3, 3], [3, 3]],
                            strides=[[1, 1], [2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    net = build_network(plan, num_input_channels=1, num_outputs=2)
    # encoder 0: conv 1->2 3x3: 2*1*9 + 2 bias = 20, instance norm affine 2+2 = 4  -> 24
    # encoder 1: conv 2->4 3x3: 4*2*9 + 4 = 76, norm 8                            -> 84
    # transposed conv 4->2 2x2: 4*2*4 + 2 = 34
    # decoder 0: conv (2+2)->2 3x3: 2*4*9 + 2 = 74, norm 4                          -> 78
    # seg head 1x1 2->2: 2*2 + 2 = 6
    # total 24 + 84 + 34 + 78 + 6 = 226
    assert sum(p.numel() for p in net.parameters()) == 226


def test_he_init_and_zero_bias():
    net = build_network(plan_3d(features=(4, 8, 16, 32)), 2, 3)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert all(torch.all(m.bias == 0) for m in convs)
    conv = net.encoder[3][1][0]  # 32 -> 32, 3x3x3: fan_in 864, std sqrt(2 / (1 + 0.01^2) / 864) ~ 0.0481
    assert conv.weight.std().item() == pytest.approx((2 / (1 + 1e-4) / 864) ** 0.5, rel=0.05)


@pytest.mark.parametrize("spacing, patch", [([1.0, 1.0, 1.0], [32, 32, 32]), ([3.0, 1.0, 1.0], [12, 40, 40]),
                                            ([1.0, 1.0], [48, 40])])
def test_feature_map_size_equals_the_planner_estimate(spacing, patch):
    topology = plan_topology(spacing, patch)
    features = features_per_stage(topology.n_stages, len(spacing))
    plan = ArchitecturePlan(conv_dim=len(spacing), features_per_stage=features, kernel_sizes=topology.kernel_sizes,
                            strides=topology.strides, n_conv_per_stage=[2] * topology.n_stages,
                            n_conv_per_stage_decoder=[2] * (topology.n_stages - 1))
    net = build_network(plan, 1, 3)
    assert net.feature_map_size(topology.patch_size) == feature_map_estimate(topology, features, 3)


def test_feature_map_size_by_hand_and_indivisible_patch():
    plan = ArchitecturePlan(conv_dim=2, features_per_stage=[2, 4], kernel_sizes=[[3, 3], [3, 3]],
                            strides=[[1, 1], [2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    net = build_network(plan, 1, 5)
    # patch 4x4: enc0 2*16 + enc1 4*4 + transposed 2*16 + dec 2*16 + seg 5*16 = 32+16+32+32+80 = 192
    assert net.feature_map_size([4, 4]) == 192
    with pytest.raises(BoxunetError, match="not divisible"):
        net.feature_map_size([5, 4])


def test_deep_supervision_scales():
    plan = ArchitecturePlan(conv_dim=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
                            strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=[2] * 3,
                            n_conv_per_stage_decoder=[2] * 2)
    assert deep_supervision_scales(plan) == [[1, 1, 1], [1, 0.5, 0.5]]
    # cumulative strides (1,1,1), (1,2,2), (2,4,4); the bottleneck (4,8,8) has no output
    assert deep_supervision_scales(plan_3d()) == [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]]


def test_inconsistent_plan_is_rejected():
    plan = plan_2d()
    plan.n_conv_per_stage_decoder = [1, 1, 1]
    with pytest.raises(BoxunetError, match="inconsistent"):
        UNet(plan, 1, 2)
