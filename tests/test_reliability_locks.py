"""One run per output folder (issue 22, items 9 and 11): a second run is refused naming the first's process,
a killed run's lock is free at once, and what dead runs left half-written is cleaned by the next run."""
import os
import subprocess
import sys
import time

import pytest

from boxunet.errors import BoxunetError
from boxunet.io.locks import LOCK_FILE_NAME, exclusive_folder, remove_dead_temporaries

HOLD_LOCK = """
import sys, time
from boxunet.io.locks import exclusive_folder
with exclusive_folder(sys.argv[1], "training"):
    print("held", flush=True)
    time.sleep(60)
"""


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_a_second_run_in_a_held_folder_is_refused_naming_the_first(tmp_path):
    with exclusive_folder(tmp_path / "fold_0", "training"):
        with pytest.raises(BoxunetError, match=rf"fold_0: the training of process {os.getpid()} is writing here"):
            with exclusive_folder(tmp_path / "fold_0", "training"):
                pass
    with exclusive_folder(tmp_path / "fold_0", "training"):  # released on exit
        pass


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BoxunetError, match=rf"the training of process {holder.pid} is writing here"):
            with exclusive_folder(tmp_path, "prediction"):
                pass
    finally:
        holder.kill()  # kill -9: no clean-up runs in the holder
        holder.wait()
    assert (tmp_path / LOCK_FILE_NAME).is_file()
    with exclusive_folder(tmp_path, "prediction"):
        assert (tmp_path / LOCK_FILE_NAME).read_text() == f"the prediction of process {os.getpid()}"


def test_temporaries_of_dead_processes_are_removed_when_the_folder_is_taken(tmp_path):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "validation").mkdir()
        leftovers = [tmp_path / f".tmp_{dead}_checkpoint_best.pth", tmp_path / "validation" / f".tmp_{dead}_c.nii.gz"]
        kept = [tmp_path / f".tmp_{sleeper.pid}_checkpoint_latest.pth", tmp_path / f".tmp_{os.getpid()}_x.json",
                tmp_path / ".tmp_notapid_y.json", tmp_path / "checkpoint_final.pth"]
        for path in leftovers + kept:
            path.write_bytes(b"x" * 10)
        with exclusive_folder(tmp_path, "training"):
            assert all(not path.exists() for path in leftovers)
            assert all(path.exists() for path in kept)
        assert remove_dead_temporaries(tmp_path) == []
    finally:
        sleeper.kill()
        sleeper.wait()
    time.sleep(0.1)
    assert remove_dead_temporaries(tmp_path) == [tmp_path / f".tmp_{sleeper.pid}_checkpoint_latest.pth"]
