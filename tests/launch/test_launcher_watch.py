"""The local launcher's watch over its ranks, with stand-in processes: a rank that vanishes without an
exit note is named and the job ended; ranks that finished but linger are ended with the agreed status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from hpc_rlhf.launch import local
from tests.conftest import need


@pytest.fixture
def job(tmp_path, monkeypatch):
    """A stand-in mpiexec and three stand-in ranks (sleep processes) registered in RUN_DIR/.ranks."""
    need(hasattr(os, "pidfd_open"), "os.pidfd_open (Linux >= 5.3), which the launcher's watch uses")
    mpiexec = subprocess.Popen(["sleep", "60"])
    ranks = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    d = tmp_path / ".ranks"
    d.mkdir()
    for r, (p, role) in enumerate(zip(ranks, ["generate", "score", "train"])):
        (d / f"rank_{r:05d}.json").write_text(
            json.dumps({"rank": r, "role": role, "index": 0, "pid": p.pid, "host": "h"})
        )
    monkeypatch.setattr(local, "rank_processes", lambda root: [p.pid for p in ranks if p.poll() is None])
    yield mpiexec, ranks, tmp_path
    for p in [mpiexec, *ranks]:
        p.kill()
        p.wait()


def test_a_rank_gone_without_an_exit_note_is_named_and_the_job_ended(job):
    mpiexec, ranks, run = job
    w = local._Watcher(mpiexec, str(run), 3)
    time.sleep(0.5)
    t0 = time.monotonic()
    ranks[1].send_signal(signal.SIGKILL)
    mpiexec.wait(timeout=10)  # the watcher killed the job
    w.join()
    assert time.monotonic() - t0 < 5
    assert w.verdict.startswith("rank 1 (score #0, pid") and "died without a word" in w.verdict
    assert all(p.wait(timeout=5) is not None for p in ranks)


def test_ranks_that_finished_but_linger_are_ended_with_the_agreed_status(job):
    mpiexec, ranks, run = job
    for r in range(3):
        (run / ".ranks" / f"rank_{r:05d}.exit").write_text("75\n")
    w = local._Watcher(mpiexec, str(run), 3, linger_s=1.0)
    time.sleep(0.5)
    ranks[2].terminate()  # trainer 0 left; the other two "hang in MPI_Finalize"
    mpiexec.wait(timeout=10)
    w.join()
    assert w.verdict == "" and w.agreed == 75
    assert all(p.wait(timeout=5) is not None for p in ranks)


def test_a_rank_that_failed_with_an_error_is_left_to_name_itself(job):
    mpiexec, ranks, run = job
    (run / ".ranks" / "rank_00000.exit").write_text("failed\n")
    w = local._Watcher(mpiexec, str(run), 3, linger_s=60)
    time.sleep(0.5)
    ranks[0].terminate()
    ranks[1].kill()  # as MPI_Abort would end the others
    time.sleep(1.0)
    assert mpiexec.poll() is None and w.verdict == ""  # no second, misleading error
