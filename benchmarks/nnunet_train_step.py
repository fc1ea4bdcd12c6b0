"""Time nnU-Net v2's training step (PlainConvUNet, DC+CE with deep supervision, SGD, clipping at 12) on CPU
for the patch size, batch size and network of a boxunet plans file, for a side-by-side comparison with
``boxunet_benchmark train``. Runs in an environment where nnunetv2 is installed:

    python benchmarks/nnunet_train_step.py PLANS_JSON CONFIGURATION [--iterations 3] [--warmup 1]

The network is built and initialized (He) as nnU-Net's get_network_from_plans does, and the step follows
nnU-Net's train_step (zero_grad, forward, deep-supervision loss, backward, gradient clipping, step; no
autocast on CPU). Inputs are random tensors of the batch's shape: the compute does
not depend on the values.
"""
import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plans")
    parser.add_argument("configuration")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    arguments = parser.parse_args()
    plans = json.load(open(arguments.plans))
    configuration = plans["configurations"][arguments.configuration]
    architecture = configuration["architecture"]
    labels = plans["labels"]
    num_classes = len({v for v in labels.values() if isinstance(v, int)})
    dim = architecture["conv_dim"]
    conv, norm = (torch.nn.Conv3d, torch.nn.InstanceNorm3d) if dim == 3 else (torch.nn.Conv2d, torch.nn.InstanceNorm2d)
    network = PlainConvUNet(plans["num_input_channels"], len(architecture["features_per_stage"]),
                            architecture["features_per_stage"], conv, architecture["kernel_sizes"],
                            architecture["strides"], architecture["n_conv_per_stage"], num_classes,
                            architecture["n_conv_per_stage_decoder"], conv_bias=True, norm_op=norm,
                            norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                            nonlin_kwargs={"inplace": True}, deep_supervision=True)
    network.apply(network.initialize)  # He init, as nnU-Net's get_network_from_plans does
    weights = np.array([1 / 2 ** i for i in range(len(architecture["strides"]) - 1)])
    weights[-1] = 0
    weights = weights / weights.sum()
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": configuration["batch_dice"], "smooth": 1e-5,
                                                  "do_bg": False, "ddp": False}, {}, weight_ce=1, weight_dice=1,
                                                 ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss), weights)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    batch, patch = configuration["batch_size"], configuration["patch_size"]
    data = torch.randn(batch, plans["num_input_channels"], *patch)
    scales = np.cumprod(np.vstack(architecture["strides"]), axis=0)[:-1]
    targets = [torch.randint(0, num_classes, (batch, 1, *[p // s for p, s in zip(patch, scale)])).float()
               for scale in scales]
    network.train()
    times = []
    for iteration in range(arguments.warmup + arguments.iterations):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        output = network(data)
        value = loss(output, targets)
        value.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        if iteration >= arguments.warmup:
            times.append(time.perf_counter() - started)
    print(json.dumps({"tool": "nnU-Net v2 train_step", "configuration": arguments.configuration,
                      "patch_size": patch, "batch_size": batch, "threads": torch.get_num_threads(),
                      "median_seconds_per_iteration": round(statistics.median(times), 3),
                      "all_seconds": [round(t, 3) for t in times],
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)}, indent=2))


if __name__ == "__main__":
    main()
