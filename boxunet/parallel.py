"""Run a function over many items in worker processes, with a progress bar and clear failures."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from boxunet.errors import BoxunetError


def default_num_processes() -> int:
    """Number of worker processes when the user gives none: the CPU cores available to this process."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _set_torch_threads(threads: int) -> None:
    import torch  # only workers that run torch code ask for this
    torch.set_num_threads(threads)


def map_in_processes(function, items: list, num_processes: int, description: str, progress: bool = True,
                     worker_threads: int | None = None) -> list:
    """Return ``[function(item) for item in items]``, computed by ``num_processes`` spawned workers.

    With one process (or one item) everything runs in this process, which makes debugging easy.
    ``worker_threads`` sets torch's thread count at each worker's start (this process keeps its own).
    Results keep the order of ``items``. A worker that dies (usually out of memory) raises a
    BoxunetError that suggests a lower ``-np``.
    """
    bar = tqdm(total=len(items), desc=description, disable=not progress, unit="case")
    try:
        if num_processes <= 1 or len(items) <= 1:
            results = []
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")
        results = [None] * len(items)
        with ProcessPoolExecutor(min(num_processes, len(items)), mp_context=context,
                                 initializer=_set_torch_threads if worker_threads else None,
                                 initargs=(worker_threads,) if worker_threads else ()) as pool:
            futures = {pool.submit(function, item): index for index, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BrokenProcessPool:
                raise BoxunetError(f"{description}: a worker process died, usually because the machine ran out "
                                   f"of memory; rerun with fewer processes (-np {max(1, num_processes // 2)}). "
                                   "Finished cases are kept.") from None
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results
    finally:
        bar.close()


def check_part(num_parts: int, part_id: int) -> None:
    """``--num-parts N --part-id I``: N must be at least 1 and I one of 0..N-1 (a BoxunetError otherwise)."""
    if num_parts < 1:
        raise BoxunetError(f"--num-parts {num_parts}: give 1 or more")
    if not 0 <= part_id < num_parts:
        raise BoxunetError(f"--num-parts {num_parts} --part-id {part_id}: the part id must be one of 0-{num_parts - 1}")


def share_of(items: list, num_parts: int, part_id: int) -> list:
    """Part ``part_id`` of ``num_parts`` disjoint shares of ``items``: every ``num_parts``-th item from ``part_id``
    on, in the items' order (``--num-parts N --part-id I``: N runs on N machines cover every item once)."""
    check_part(num_parts, part_id)
    return list(items)[part_id::num_parts]
