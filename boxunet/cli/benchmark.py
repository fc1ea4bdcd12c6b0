"""``boxunet_benchmark``: honest speed and memory measurements (medians, peak memory of the process tree).

``boxunet_benchmark preprocess -d ID`` times ``boxunet_plan_and_preprocess`` from scratch (a fresh
preprocessed root per run, so nothing is skipped); ``boxunet_benchmark predict -d ID -c CONFIG`` times
``boxunet_predict`` per case with and without mirroring TTA; ``boxunet_benchmark command -- CMD ...``
measures any command the same way (used to measure nnU-Net on the same data); ``boxunet_benchmark convcrf``
times the 3D ConvCRF's mean-field inference on one region.
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from boxunet.benchmarking import environment_with, measure_command, summarize
from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
from boxunet.nets.precision import PRECISIONS
from boxunet.paths import raw_root


def benchmark_preprocess(dataset: str, repeats: int, num_processes: int, gpu_memory_gb: float,
                         configurations: list[str]) -> dict:
    """Run plan_and_preprocess ``repeats`` times into fresh temporary roots; return the summary."""
    folder = find_dataset_folder(dataset, raw_root())
    cases = load_dataset_json(folder).num_training
    runs = []
    for _ in range(repeats):
        output = Path(tempfile.mkdtemp(prefix="boxunet_benchmark_"))
        try:
            command = [sys.executable, "-m", "boxunet.cli.plan_and_preprocess", "-d", folder.name, "-np",
                       str(num_processes), "--gpu-memory-gb", str(gpu_memory_gb), "--quiet", "-c", *configurations]
            run = measure_command(command, environment_with(boxunet_raw=str(raw_root()),
                                                            boxunet_preprocessed=str(output)))
        finally:
            shutil.rmtree(output, ignore_errors=True)
        if run.return_code != 0:
            raise BoxunetError(f"boxunet_plan_and_preprocess failed on {folder.name} (exit {run.return_code}); "
                               "run it directly to see why")
        runs.append(run)
    summary = summarize(runs)
    summary.update({"task": "plan_and_preprocess", "dataset": folder.name, "cases": cases,
                    "num_processes": num_processes, "configurations": configurations,
                    "cases_per_second": round(cases / summary["median_seconds"], 3)})
    return summary


def benchmark_train(dataset: str, configuration: str, iterations: int, warmup: int, device: str,
                    plans_name: str, precision: str = "auto", compile_network: bool = False) -> dict:
    """Median seconds per training iteration (the standard ``Trainer.train_step`` on real batches of fold 0, with
    the steps' autocast ``precision``, the network compiled with ``compile_network``) and peak memory."""
    import resource

    import torch

    from boxunet.training.distributed import ProcessGroupInfo
    from boxunet.training.options import TrainingOptions
    from boxunet.training.run import TrainingRequest, prepare
    from boxunet.training.trainer import Trainer

    options = TrainingOptions(augmentation_workers=0, progress_bar=False, precision=precision,
                              compile=compile_network)
    setup = prepare(TrainingRequest(dataset, configuration, "0", Trainer, plans_name=plans_name, device=device,
                                    options=options))
    torch_device = torch.device("cuda", 0) if device == "cuda" else torch.device(device)
    with tempfile.TemporaryDirectory(prefix="boxunet_benchmark_") as output:
        trainer = Trainer(replace(setup, output=Path(output)), options, ProcessGroupInfo(0, 1, torch_device))
        trainer.initialize()
        train_iterator, _ = trainer._iterators_for(0)
        batches = [next(train_iterator) for _ in range(warmup + iterations)]
        trainer.close_iterators()
        trainer.training_network.train()
        seconds = []
        for index, batch in enumerate(batches):
            started = time.perf_counter()
            trainer.train_step(batch)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            if index >= warmup:
                seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    summary = {"task": "train_step", "dataset": setup.folders.name, "configuration": configuration,
               "patch_size": setup.configuration.patch_size, "batch_size": setup.configuration.batch_size,
               "device": device, "precision": trainer.precision, "compiled": compile_network,
               "threads": torch.get_num_threads(),
               "median_seconds_per_iteration": round(median, 3),
               "iterations_per_second": round(1 / median, 4), "all_seconds": [round(s, 3) for s in seconds],
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)}
    if torch_device.type == "cuda":
        summary["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return summary


def _prediction_inputs(dataset: str, input_folder: Path | None, num_cases: int, staging: Path) -> Path:
    """The folder to predict: ``input_folder``, or the first ``num_cases`` cases of the raw dataset's
    imagesTs (else imagesTr) linked into ``staging``."""
    from boxunet.io.input_cases import list_prediction_cases

    if input_folder is None:
        raw = find_dataset_folder(dataset, raw_root())
        input_folder = raw / "imagesTs" if (raw / "imagesTs").is_dir() else raw / "imagesTr"
        cases = list_prediction_cases(input_folder, load_dataset_json(raw))[:num_cases]
        staging.mkdir(parents=True)
        for case in cases:
            for path in case.images:
                (staging / path.name).symlink_to(path)
        return staging
    return Path(input_folder)


def benchmark_predict(dataset: str, configuration: str, trainer: str | None, plans_name: str, folds: list[str] | None,
                      input_folder: Path | None, num_cases: int, repeats: int, device: str, extra: list[str]) -> dict:
    """Median seconds per case and peak memory of ``boxunet_predict``, with and without mirroring TTA."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="boxunet_benchmark_") as temporary:
        inputs = _prediction_inputs(dataset, input_folder, num_cases, Path(temporary) / "input")
        for name, flags in (("with_tta", []), ("without_tta", ["--disable-tta"])):
            runs, per_case = [], []
            for repeat in range(repeats):
                output = Path(temporary) / f"{name}_{repeat}"
                command = [sys.executable, "-m", "boxunet.cli.predict", "-i", str(inputs), "-o", str(output),
                           "-d", dataset, "-c", configuration, "-p", plans_name, "-device", device,
                           "--quiet", *flags, *extra] + (["-f", *folds] if folds else []) + \
                    (["-tr", trainer] if trainer else [])
                run = measure_command(command)
                if run.return_code != 0:
                    raise BoxunetError(f"boxunet_predict failed (exit {run.return_code}): {' '.join(command)}")
                runs.append(run)
                report = json.loads((output / "prediction_report.json").read_text())
                per_case += list(report["network_seconds"].values())
                cases = len(report["network_seconds"])
            summary = summarize(runs)
            summary["median_seconds_per_case"] = round(summary["median_seconds"] / max(cases, 1), 2)
            summary["median_network_seconds_per_case"] = round(statistics.median(per_case), 2)
            results[name] = summary
    return {"task": "predict", "dataset": dataset, "configuration": configuration, "trainer": trainer,
            "plans": plans_name, "cases": cases, "device": device, **results}


def benchmark_convcrf(shape: list[int], spacing: list[float], classes: int, repeats: int, device: str) -> dict:
    """Median seconds, voxels per second and memory of one ConvCRF inference (default parameters) on a
    synthetic region (an ellipsoid of contrast 1 in noise of sigma 0.2, a box-like prior), per device:
    ``device="auto"`` measures the CPU and, when one is visible, CUDA."""
    import torch

    from boxunet.boxes.convcrf import CRFParameters
    if device == "cuda" and not torch.cuda.is_available():
        raise BoxunetError("-device cuda: no CUDA device is visible")
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if device == "auto" else [device]
    parameters = CRFParameters()
    return {"task": "convcrf", "shape": shape, "spacing_mm": spacing, "classes": classes,
            "window_radius": list(parameters.window_radius(spacing)), "iterations": parameters.iterations,
            "devices": {name: _convcrf_on(name, shape, spacing, classes, repeats, parameters) for name in devices}}


def _convcrf_on(device: str, shape: list[int], spacing: list[float], classes: int, repeats: int, parameters) -> dict:
    """The timings and peak memory of ``benchmark_convcrf`` on one device, after one untimed warm-up run."""
    import resource

    import numpy as np
    import torch

    from boxunet.boxes.convcrf import mean_field
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g ** 2 for g in grid) < 0.5
    image = torch.from_numpy((inside + rng.normal(0, 0.2, shape)).astype(np.float32))[None, None].to(device)
    unary = torch.zeros((1, classes) + tuple(shape), device=device)
    unary[:, 1] = torch.from_numpy(np.where(inside, 0.5, -0.5).astype(np.float32)).to(device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for run in range(repeats + 1):
        start = time.perf_counter()
        mean_field(unary, image, spacing, parameters)
        if device == "cuda":
            torch.cuda.synchronize()
        if run:  # the first run warms up (CUDA kernels, allocator) and is not timed
            seconds.append(time.perf_counter() - start)
    voxels = int(np.prod(shape))
    median = statistics.median(seconds)
    result = {"seconds": [round(s, 3) for s in seconds], "median_seconds": round(median, 3),
              "voxels_per_second": round(voxels / median), "threads": torch.get_num_threads()}
    if device == "cuda":
        result["peak_cuda_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    else:
        increase = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024  # ru_maxrss is in KiB
        result["peak_rss_increase_gb"] = round(increase / 1e9, 3)
        result["peak_rss_increase_bytes_per_voxel"] = round(increase / voxels, 1)
    return result


def benchmark_command(command: list[str], repeats: int) -> dict:
    """Measure an arbitrary command ``repeats`` times."""
    if not command:
        raise BoxunetError("give the command to measure after --")
    runs = [measure_command(command) for _ in range(repeats)]
    failed = [r.return_code for r in runs if r.return_code != 0]
    if failed:
        raise BoxunetError(f"command {' '.join(command)} failed (exit {failed[0]})")
    summary = summarize(runs)
    summary["command"] = command
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="boxunet_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", required=True)
    preprocess = tasks.add_parser("preprocess", help="time boxunet_plan_and_preprocess from scratch")
    preprocess.add_argument("-d", "--dataset", required=True)
    preprocess.add_argument("-np", "--num-processes", type=int, default=2)
    preprocess.add_argument("--gpu-memory-gb", type=float, default=8.0)
    preprocess.add_argument("-c", "--configurations", nargs="+", default=["2d", "3d_fullres", "3d_lowres"])
    preprocess.add_argument("--repeats", type=int, default=3)
    preprocess.add_argument("-o", "--output", type=Path, help="also write the summary to this JSON file")
    train = tasks.add_parser("train", help="seconds per training iteration and peak memory")
    train.add_argument("-d", "--dataset", required=True)
    train.add_argument("-c", "--configuration", default="3d_fullres")
    train.add_argument("-p", "--plans", default="boxunetPlans")
    train.add_argument("--iterations", type=int, default=5)
    train.add_argument("--warmup", type=int, default=1)
    train.add_argument("-device", "--device", default="cpu", choices=["cpu", "cuda", "mps"])
    train.add_argument("--precision", default="auto", choices=PRECISIONS, help="autocast of the step (default: auto)")
    train.add_argument("--compile", action="store_true", help="torch.compile the network (the warm-up steps "
                       "include the compilation)")
    train.add_argument("-o", "--output", type=Path)
    predict = tasks.add_parser("predict", help="seconds per case and peak memory of boxunet_predict, with and "
                                               "without TTA")
    predict.add_argument("-d", "--dataset", required=True)
    predict.add_argument("-c", "--configuration", default="3d_fullres")
    predict.add_argument("-tr", "--trainer", help="default: as boxunet_predict")
    predict.add_argument("-p", "--plans", default="boxunetPlans")
    predict.add_argument("-f", "--folds", nargs="+", default=None)
    predict.add_argument("-i", "--input", type=Path, default=None,
                         help="folder to predict (default: the first --num-cases of the raw imagesTs or imagesTr)")
    predict.add_argument("--num-cases", type=int, default=1)
    predict.add_argument("--repeats", type=int, default=3)
    predict.add_argument("-device", "--device", default="cpu", choices=["cpu", "cuda", "mps"])
    predict.add_argument("--precision", default=None, help="passed to boxunet_predict (default: its own)")
    predict.add_argument("--backend", default=None, choices=["torch", "onnxruntime"],
                         help="passed to boxunet_predict (onnxruntime: the model's exported model.onnx)")
    predict.add_argument("-o", "--output", type=Path)
    convcrf = tasks.add_parser("convcrf", help="voxels per second of the 3D ConvCRF on one region")
    convcrf.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], help="z y x (default: %(default)s)")
    convcrf.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="mm (default: %(default)s)")
    convcrf.add_argument("--classes", type=int, default=2)
    convcrf.add_argument("--repeats", type=int, default=3)
    convcrf.add_argument("-device", "--device", default="auto", choices=["auto", "cpu", "cuda"],
                         help="auto (default): the CPU, and CUDA when a device is visible")
    convcrf.add_argument("-o", "--output", type=Path)
    command = tasks.add_parser("command", help="time any command: boxunet_benchmark command -- CMD ARGS")
    command.add_argument("--repeats", type=int, default=3)
    command.add_argument("-o", "--output", type=Path)
    command.add_argument("cmd", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.task == "preprocess":
        summary = run_cli(benchmark_preprocess, arguments.dataset, arguments.repeats, arguments.num_processes,
                          arguments.gpu_memory_gb, arguments.configurations)
    elif arguments.task == "train":
        summary = run_cli(benchmark_train, arguments.dataset, arguments.configuration, arguments.iterations,
                          arguments.warmup, arguments.device, arguments.plans, arguments.precision,
                          arguments.compile)
    elif arguments.task == "predict":
        extra = (["--precision", arguments.precision] if arguments.precision else []) + \
            (["--backend", arguments.backend] if arguments.backend else [])
        summary = run_cli(benchmark_predict, arguments.dataset, arguments.configuration, arguments.trainer,
                          arguments.plans, arguments.folds, arguments.input, arguments.num_cases, arguments.repeats,
                          arguments.device, extra)
    elif arguments.task == "convcrf":
        summary = run_cli(benchmark_convcrf, arguments.shape, arguments.spacing, arguments.classes, arguments.repeats,
                          arguments.device)
    else:
        cmd = arguments.cmd[1:] if arguments.cmd[:1] == ["--"] else arguments.cmd
        summary = run_cli(benchmark_command, cmd, arguments.repeats)
    text = json.dumps(summary, indent=2)
    print(text)
    if arguments.output:
        arguments.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
