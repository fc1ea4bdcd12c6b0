"""``boxunet_benchmark``: honest speed and memory measurements (medians, peak memory of the process tree).

``boxunet_benchmark preprocess -d ID`` times ``boxunet_plan_and_preprocess`` from scratch (a fresh
preprocessed root per run, so nothing is skipped); ``boxunet_benchmark command -- CMD ...`` measures any
command the same way (used to measure nnU-Net on the same data).
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from boxunet.benchmarking import environment_with, measure_command, summarize
from boxunet.cli.common import run_cli
from boxunet.errors import BoxunetError
from boxunet.io.dataset_json import load_dataset_json
from boxunet.io.dataset_locator import find_dataset_folder
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
    command = tasks.add_parser("command", help="time any command: boxunet_benchmark command -- CMD ARGS")
    command.add_argument("--repeats", type=int, default=3)
    command.add_argument("-o", "--output", type=Path)
    command.add_argument("cmd", nargs=argparse.REMAINDER)
    arguments = parser.parse_args(argv)
    if arguments.task == "preprocess":
        summary = run_cli(benchmark_preprocess, arguments.dataset, arguments.repeats, arguments.num_processes,
                          arguments.gpu_memory_gb, arguments.configurations)
    else:
        cmd = arguments.cmd[1:] if arguments.cmd[:1] == ["--"] else arguments.cmd
        summary = run_cli(benchmark_command, cmd, arguments.repeats)
    text = json.dumps(summary, indent=2)
    print(text)
    if arguments.output:
        arguments.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
