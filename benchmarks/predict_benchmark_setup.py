"""Set up the boxunet vs nnU-Net v2 prediction benchmark: one CT, the same network and patch for both.

Run with a Python that has both boxunet and nnunetv2 (e.g. the throwaway nnU-Net venv created with
--system-site-packages, see documentation/benchmarks.md):

    python benchmarks/predict_benchmark_setup.py --boxunet-plans PRE/Dataset900_KiTSDemo/boxunet_plans.json \
        --nnunet-plans NNPRE/Dataset900_KiTSDemo/nnUNetPlans.json --dataset-json RAW/Dataset900_KiTSDemo/dataset.json \
        --output /tmp/predict_bench [--shape 103 187 187] [--patch 80 192 160]

It writes
- ``input/case_0000.nii.gz``: a synthetic KiTS-like CT resampled to the plans' 3d_fullres spacing and
  cropped/padded to ``--shape`` (so neither tool resamples it: both time the same network work);
- ``boxunet_results/<dataset>/Trainer__boxunetBench__3d_fullres/``: boxunet plans with ``--patch`` and the
  U-Net nnU-Net would plan for it, dataset.json, fold_0/checkpoint_final.pth (He-initialized weights);
- ``nnUNet_results/<dataset>/nnUNetTrainer__nnUNetPlans__3d_fullres/``: nnU-Net's plans with the same patch
  and strides, dataset.json, fold_0/checkpoint_final.pth of nnU-Net's PlainConvUNet (He-initialized).
The compute of a forward pass does not depend on the weights' values.
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from boxunet.nets.unet import build_network
from boxunet.paths import PLANS_FILE_NAME
from boxunet.planning.plans import load_plans, save_plans
from boxunet.planning.topology import features_per_stage, plan_topology
from dataset_conversion.phantom import generate_case


def benchmark_image(spacing_zyx, shape_zyx, seed: int = 1000) -> sitk.Image:
    """A phantom CT resampled to ``spacing_zyx`` and centre-cropped/padded (air) to ``shape_zyx``."""
    image, _, geometry = generate_case(seed)
    source = sitk.GetImageFromArray(image.astype(np.float32))
    source.SetSpacing([float(s) for s in reversed(geometry.spacing)])
    size = [int(round(n * s / t)) for n, s, t in zip(reversed(image.shape), source.GetSpacing(), reversed(spacing_zyx))]
    resampled = sitk.Resample(source, size, sitk.Transform(), sitk.sitkLinear, source.GetOrigin(),
                              [float(s) for s in reversed(spacing_zyx)], source.GetDirection(), -1000.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(resampled)
    out = np.full(shape_zyx, -1000, dtype=np.int16)
    src, dst = [], []
    for have, want in zip(array.shape, shape_zyx):
        lo_src, lo_dst = max(0, (have - want) // 2), max(0, (want - have) // 2)
        n = min(have, want)
        src.append(slice(lo_src, lo_src + n))
        dst.append(slice(lo_dst, lo_dst + n))
    out[tuple(dst)] = np.round(array[tuple(src)])
    result = sitk.GetImageFromArray(out)
    result.SetSpacing([float(s) for s in reversed(spacing_zyx)])
    return result


def boxunet_model(plans_file: Path, dataset_json: Path, patch, folder: Path) -> dict:
    plans = load_plans(plans_file)
    configuration = plans.configuration("3d_fullres")
    topology = plan_topology(configuration.spacing, list(patch))
    configuration.patch_size = list(topology.patch_size)
    architecture = configuration.architecture
    architecture.strides, architecture.kernel_sizes = topology.strides, topology.kernel_sizes
    architecture.features_per_stage = features_per_stage(topology.n_stages, 3)
    architecture.n_conv_per_stage = [2] * topology.n_stages
    architecture.n_conv_per_stage_decoder = [2] * (topology.n_stages - 1)
    plans.plans_name = "boxunetBench"
    folder.mkdir(parents=True, exist_ok=True)
    save_plans(plans, folder / PLANS_FILE_NAME)
    shutil.copyfile(dataset_json, folder / "dataset.json")
    num_outputs = len(plans.label_set.values)
    network = build_network(configuration.architecture, plans.num_input_channels, num_outputs)
    (folder / "fold_0").mkdir(exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "optimizer_state": {}, "current_epoch": 0,
                "trainer_name": "Trainer", "options": {}, "configuration": "3d_fullres", "num_outputs": num_outputs,
                "inference_allowed_mirroring_axes": [0, 1, 2]}, folder / "fold_0" / "checkpoint_final.pth")
    return {"patch_size": configuration.patch_size, "strides": configuration.architecture.strides,
            "kernel_sizes": configuration.architecture.kernel_sizes,
            "features": configuration.architecture.features_per_stage, "spacing": configuration.spacing}


def nnunet_model(plans_file: Path, dataset_json: Path, boxunet_network: dict, folder: Path) -> None:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    plans = json.loads(Path(plans_file).read_text())
    configuration = plans["configurations"]["3d_fullres"]
    configuration["patch_size"] = boxunet_network["patch_size"]
    arch = configuration["architecture"]["arch_kwargs"]
    arch.update(n_stages=len(boxunet_network["strides"]), features_per_stage=boxunet_network["features"],
                strides=boxunet_network["strides"], kernel_sizes=boxunet_network["kernel_sizes"],
                n_conv_per_stage=[2] * len(boxunet_network["strides"]),
                n_conv_per_stage_decoder=[2] * (len(boxunet_network["strides"]) - 1))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    dataset = json.loads(Path(dataset_json).read_text())
    dataset.pop("box_labels", None)
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    num_classes = len({v for v in dataset["labels"].values() if isinstance(v, int)})
    network = PlainConvUNet(1, arch["n_stages"], arch["features_per_stage"], torch.nn.Conv3d, arch["kernel_sizes"],
                            arch["strides"], arch["n_conv_per_stage"], num_classes, arch["n_conv_per_stage_decoder"],
                            conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                            nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    network.apply(network.initialize)
    (folder / "fold_0").mkdir(exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "3d_fullres", "plans": plans, "fold": 0, "dataset_json": dataset},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0},
               folder / "fold_0" / "checkpoint_final.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxunet-plans", type=Path, required=True)
    parser.add_argument("--nnunet-plans", type=Path, required=True)
    parser.add_argument("--dataset-json", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--shape", type=int, nargs=3, default=[103, 187, 187])
    parser.add_argument("--patch", type=int, nargs=3, default=[80, 192, 160])
    arguments = parser.parse_args()
    dataset = arguments.boxunet_plans.parent.name
    network = boxunet_model(arguments.boxunet_plans, arguments.dataset_json, arguments.patch,
                            arguments.output / "boxunet_results" / dataset / "Trainer__boxunetBench__3d_fullres")
    nnunet_model(arguments.nnunet_plans, arguments.dataset_json, network,
                 arguments.output / "nnUNet_results" / dataset / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    (arguments.output / "input").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(benchmark_image(network["spacing"], arguments.shape), str(arguments.output / "input" / "case_0000.nii.gz"))
    print(json.dumps(network))


if __name__ == "__main__":
    main()
