"""Stop signals (checkpoint, then the requeue status) and a rank killed on its own, on multi-rank runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpc_rlhf.checkpoint.store import find_latest
from tests.conftest import FAULT_STEPS, REPO, kr

pytestmark = pytest.mark.mpi


def start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def rank(run, r):
    return json.load(open(os.path.join(run, ".ranks", f"rank_{r:05d}.json")))


def steps_logged(run):
    return [json.loads(x)["step"] for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]


def stop_after(proc, run, n, send):
    """Once the attempt logged `n` steps, call send(); return (exit status, stderr, seconds to exit)."""
    t0 = time.time()
    assert kr.wait_steps(proc, run, t0, n), "the run ended before the signal"
    send()
    t = time.monotonic()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.monotonic() - t


def test_sigusr2_checkpoints_and_exits_with_the_requeue_status(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    # 1. SIGUSR2 to `hpc-rlhf train` (Ctrl-C / Slurm's warning): it passes it on to every rank
    proc = start("train", *train_args, f"run_dir={run}", "checkpoint.every_steps=100")
    code, err, took = stop_after(proc, run, 3, lambda: proc.send_signal(signal.SIGUSR2))
    assert code == 75, err
    assert "stopped after a checkpoint; continue with: hpc-rlhf resume" in err
    done = steps_logged(run)
    assert done == list(range(len(done))) and 3 <= len(done) < FAULT_STEPS
    assert find_latest(run).step == len(done)  # no periodic checkpoint: the stop wrote this one
    assert took < 30, f"{took:.0f} s from the signal to the exit"
    assert "did not leave" not in err  # no rank hung in MPI_Finalize (Control.finish)
    # 2. SIGUSR2 to the generator rank alone: it tells trainer 0, which stops everyone at a step boundary
    proc = start("resume", run)
    code, err, _ = stop_after(proc, run, 2, lambda: os.kill(rank(run, 0)["pid"], signal.SIGUSR2))
    assert code == 75, err
    assert find_latest(run).step == len(steps_logged(run)) > len(done)
    # 3. to the end: bit-identical to the uninterrupted run
    proc = start("resume", run)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kr.check_run(run, FAULT_STEPS, reference) == []


def test_a_killed_rank_ends_the_job_naming_it_and_the_run_resumes(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    proc = start("train", *train_args, f"run_dir={run}")
    code, err, took = stop_after(proc, run, 3, lambda: os.kill(rank(run, 1)["pid"], signal.SIGKILL))
    assert code not in (0, 75), err
    assert took < 60, f"the job took {took:.0f} s to end"
    assert "error: rank 1 (score #0, pid" in err and "died" in err, err
    proc = start("resume", run)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kr.check_run(run, FAULT_STEPS, reference) == []
