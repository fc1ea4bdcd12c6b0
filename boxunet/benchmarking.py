"""Measure wall time and peak memory of a command and all the processes it starts.

Memory is sampled from /proc every 50 ms: the peak of the summed resident set size over the whole
process tree (shared pages counted once per process, so an upper bound) and the peak of the largest
single process. Linux only.
"""
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLING_INTERVAL_S = 0.05


@dataclass
class RunMeasurement:
    """One run of a command: wall time, peak summed tree RSS and peak single-process RSS, in bytes."""

    seconds: float
    peak_tree_rss: int
    peak_process_rss: int
    return_code: int


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_rss(root: int) -> tuple[int, int]:
    total, largest, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        rss = _rss_bytes(pid)
        total += rss
        largest = max(largest, rss)
        stack += _children(pid)
    return total, largest


def measure_command(command: list[str], env: dict | None = None, quiet: bool = True) -> RunMeasurement:
    """Run ``command`` to completion while sampling its process tree's memory."""
    output = subprocess.DEVNULL if quiet else None
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    peaks = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            total, largest = _tree_rss(process.pid)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
            done.wait(SAMPLING_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    return_code = process.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return RunMeasurement(seconds, peaks[0], peaks[1], return_code)


def summarize(runs: list[RunMeasurement]) -> dict:
    """Median wall time and the peak memory over all runs (GB)."""
    return {
        "runs": len(runs),
        "median_seconds": round(statistics.median(r.seconds for r in runs), 2),
        "all_seconds": [round(r.seconds, 2) for r in runs],
        "peak_tree_rss_gb": round(max(r.peak_tree_rss for r in runs) / 1e9, 3),
        "peak_process_rss_gb": round(max(r.peak_process_rss for r in runs) / 1e9, 3),
    }


def environment_with(**variables: str) -> dict:
    """The current environment plus ``variables``."""
    env = dict(os.environ)
    env.update(variables)
    return env
