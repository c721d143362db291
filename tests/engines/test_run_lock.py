"""The run folder's lock (filelock's native lock): one training per folder, the holder named, nothing followed or hung."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dsgan_cli.engines.rundir import LOCK_FILE, lock_run_folder, unlock_run_folder
from dsgan_cli.plumbing.errors import DsganError

HOLD = """
import sys, time
from pathlib import Path
from dsgan_cli.engines.rundir import lock_run_folder
lock_run_folder(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_second_process_is_refused_naming_the_holder_and_the_lock_is_reentrant(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (out / LOCK_FILE).read_text().strip() == f"pid {holder.pid}"
        with pytest.raises(DsganError, match=f"another training is running in this folder \\(pid {holder.pid}\\)"):
            lock_run_folder(out)
    finally:
        holder.kill()
        holder.wait()
    # The OS dropped the dead holder's lock: this process takes it, twice (reentrant), and writes its own pid.
    lock_run_folder(out)
    lock_run_folder(out)
    assert (out / LOCK_FILE).read_text().strip() == f"pid {os.getpid()}"
    unlock_run_folder(out)
    refused = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", ""), str(out)], capture_output=True, text=True)
    assert refused.returncode == 0, f"the lock was not released: {refused.stderr}"


def test_a_fifo_at_the_locks_name_is_refused_without_waiting(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / LOCK_FILE)
    with pytest.raises(DsganError, match="cannot lock the run folder"):
        lock_run_folder(out)  # a blocking open of a FIFO would hang here
    assert (out / LOCK_FILE).is_fifo()
