"""`hpc-rlhf submit --resume RUN_DIR` on the dev cluster: a real job whose rank 0 (the lease holder) is
SIGKILLed ends FAILED with its lease left behind, fresh (runtime.lease_ttl_s=600); submitting the run again
from its own config.yaml and checkpoint takes that lease over at once, since its Slurm job has ended; a second
`submit --resume` while it runs is refused; it ends bit-identical to an uninterrupted run, and `status` shows
both attempts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.launch import slurm_events, slurm_runs, slurm_submit
from tests.conftest import eval_series, tiny_eval
from tests.launch.slurm.test_dev_cluster import DONE, REPO, run_logs, wait_for, wait_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

TINY = str(REPO / "configs" / "tiny.yaml")
STEPS = 30


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _sha(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "final" / "policy" / "model.safetensors").read_bytes()).hexdigest()


def _step(run_dir: Path) -> int:
    return slurm_runs.progress(run_dir)["step"] or 0


def test_a_failed_job_is_submitted_again_and_ends_bit_identical(tmp_path, jobs, tiny_rm):
    run_dir = tmp_path / "run"
    over = [f"total_steps={STEPS}", "checkpoint.every_steps=2", "slurm.timeout_min=10", "runtime.lease_ttl_s=600"]
    over += [*tiny_rm["overrides"], *tiny_eval(10, rm=True)]  # evaluation of versions 10, 20, 30 on the generation rank
    cfg = load_config(TINY, [f"run_dir={run_dir}", *over])
    first = slurm_submit.submit(cfg, TINY, False, out=io.StringIO())
    jobs.append(first.job_id)
    wait_for(lambda: _step(run_dir) >= 3 and slurm_runs.progress(run_dir)["checkpoint"], "a checkpoint", timeout=240)
    rank0 = json.loads((run_dir / ".ranks" / f"rank_{0:05d}.json").read_text())
    os.kill(rank0["pid"], signal.SIGKILL)
    done = wait_state(first.job_id, DONE, timeout=120)
    assert done["JobState"] == "FAILED", done
    assert _step(run_dir) < STEPS - 1, "the job must fail before its end for the test to mean anything"
    lease = json.loads((run_dir / "owner.json").read_text())  # the killed rank 0 could not release it
    assert lease["slurm_job_id"] == first.job_id and time.time() - lease["renewed_unix"] < 300, lease
    again = _cli("submit", "--resume", str(run_dir))
    ids = slurm_events.job_ids(run_dir)
    jobs.extend(ids[1:])
    assert again.returncode == 0, again.stderr + run_logs(run_dir)
    assert len(ids) == 2 and f"submitted Slurm job {ids[1]}" in again.stdout, (again.stdout, again.stderr)
    assert [e["event"] for e in slurm_events.read_events(run_dir) if e["event"] in ("submit", "resume")] == [
        "submit",
        "resume",
    ]
    second = _cli("submit", "--resume", str(run_dir), "total_steps=80")
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"already has Slurm job {ids[1]}" in second.stderr, second.stderr
    assert slurm_events.job_ids(run_dir) == ids
    done = wait_state(ids[1], DONE, timeout=300)
    assert done["JobState"] == "COMPLETED", run_logs(run_dir)
    shown = _cli("status", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    attempts = [ln for ln in lines if ln.strip().startswith((first.job_id, ids[1]))]
    assert len(attempts) == 2 and "submit" in attempts[0] and "FAILED" in attempts[0], shown.stdout
    assert "resume" in attempts[1] and "COMPLETED" in attempts[1], shown.stdout
    assert f"step:       {STEPS} / {STEPS} (rl), finished" in shown.stdout, shown.stdout
    ref = tmp_path / "uninterrupted"
    local = _cli("train", TINY, f"run_dir={ref}", *over, timeout=600)
    assert local.returncode == 0, local.stderr
    assert _sha(run_dir) == _sha(ref), "submit --resume after a killed rank must end bit-identical"
    evals = eval_series(str(ref))
    assert sorted(evals) == [9, 19, 29] and eval_series(str(run_dir)) == evals, "the eval series must match"
    assert all("eval/reward/rm" in e for e in evals.values())  # the reward model, loaded on the generation rank
    assert "eval:       step 29: reward_mean" in shown.stdout, shown.stdout
