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
from hpc_rlhf.cluster.ranks import proc_start
from tests.conftest import FAULT_STEPS, REPO, cli, kr

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


def _tree(root: int) -> dict[int, str]:
    """pid -> start time of `root` and every process below it (/proc)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat").read()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(name))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        start = proc_start(pid)
        if start is not None:
            out[pid] = start
            todo += kids.get(pid, [])
    return out


def test_a_killed_launcher_leaves_no_process_of_the_run_and_the_run_resumes(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    proc = start("train", *train_args, f"run_dir={run}")
    assert kr.wait_steps(proc, run, time.time(), 3), "the run ended before the kill"
    tree = _tree(proc.pid)
    assert len(tree) >= 5, tree  # launcher, mpiexec, hydra's proxy, three ranks
    proc.kill()  # SIGKILL of the launcher alone: it runs none of its code
    proc.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 15 and any(proc_start(p) == s for p, s in tree.items()):
        time.sleep(0.2)
    left = [p for p, s in tree.items() if proc_start(p) == s]
    assert not left, f"processes of the run still alive 15 s after the launcher's SIGKILL: {left}"
    print(f"all {len(tree)} processes of the run gone {time.monotonic() - t0:.2f} s after the launcher's SIGKILL")
    proc = start("resume", run)  # the lease of the dead launcher is provably stale: taken over at once
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "taking over the lease" in err
    assert kr.check_run(run, FAULT_STEPS, reference) == []


def test_a_live_run_dir_refuses_a_second_train_and_resume_and_finishes_alone(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    proc = start("train", *train_args, f"run_dir={run}")
    assert kr.wait_steps(proc, run, time.time(), 2), "the run ended before the second command"
    for args in (("train", *train_args, f"run_dir={run}"), ("resume", run)):
        t0 = time.monotonic()
        second = cli(*args, check=False, timeout=120)
        took = time.monotonic() - t0
        err = second.stderr.strip()
        assert second.returncode == 2 and len(err.splitlines()) == 1, err
        assert f"is in use by pid {proc.pid} on " in err and "(hpc-rlhf train" in err, err
        assert took < 30, f"refused after {took:.0f} s"
        print(f"`{args[0]}` on the live run dir refused after {took:.2f} s: {err}")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kr.check_run(run, FAULT_STEPS, reference) == []  # the weights it would have had alone
    assert not os.path.exists(os.path.join(run, "owner.json"))  # released at the end


def test_a_stopped_rank_is_named_within_the_heartbeat_timeout(tmp_path, train_args):
    run = str(tmp_path / "run")
    proc = start("train", *train_args, f"run_dir={run}", "runtime.heartbeat_timeout_s=5")
    stopped = None

    def stop_scorer():
        nonlocal stopped
        stopped = rank(run, 1)["pid"]
        os.kill(stopped, signal.SIGSTOP)

    try:
        code, err, took = stop_after(proc, run, 2, stop_scorer)
    finally:
        if stopped is not None and proc_start(stopped) is not None:
            os.kill(stopped, signal.SIGKILL)
    assert code not in (0, 75), err
    assert f"rank 1 (score #0, pid {stopped} on " in err and "sent no heartbeat" in err, err
    assert took < 5 + 20, f"{took:.0f} s from the SIGSTOP to the end of the job (heartbeat timeout 5 s)"
    print(f"SIGSTOP of rank 1: the job ended {took:.1f} s later (heartbeat timeout 5 s)")
