"""Slurm end to end on the dev cluster: srun --mpi=pmi2 worlds, the jobs/ template, submitit submission,
status/logs/cancel/resume, and requeue after USR2 and after real preemption.

Most tests run tests/launch/slurm/standin_worker.py (the worker's contract, no models) so they take seconds;
test_real_worker_preempted_resumes_and_finishes runs the real `hpc_rlhf.launch.worker`.
"""

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
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch import slurm_events, slurm_submit
from hpc_rlhf.launch import slurm_runs as slurm_cmds

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
STANDIN = str(HERE / "standin_worker.py")
TEMPLATE = str(REPO / "jobs" / "ppo.sbatch")
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


# ------------------------------------------------------------------------------------------------ helpers


def job_info(job_id: str) -> dict:
    r = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return {}
    return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)


def wait_for(pred, what: str, timeout: float = 60.0, interval: float = 0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_state(job_id: str, states, timeout: float = 60.0) -> dict:
    states = (states,) if isinstance(states, str) else tuple(states)
    last: dict = {}

    def check():
        nonlocal last
        last = job_info(job_id)
        return last if last.get("JobState") in states else None

    try:
        return wait_for(check, f"job {job_id} in {states}", timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; last: {last.get('JobState')} reason {last.get('Reason')}") from None


def start_requeued_now(job_id: str, timeout: float = 60.0) -> None:
    """A requeued job is held ~120 s (BeginTime); start it now, but not within the second of the requeue.

    slurmd rejects a job credential created in the same second as the revocation of the requeued
    attempt's ("Killing non-startable batch JobId=N: Job credential revoked", and the job ends FAILED):
    `StartTime=now` right after the requeue hit that second now and then. So wait 2 s after the job is
    PENDING. (A future StartTime is no way round: the job then waits for the next periodic scheduling
    pass, up to a minute.) Repeated until it runs: while the old attempt is still completing, Slurm may
    set BeginTime again after an update.
    """
    wait_state(job_id, "PENDING", timeout=timeout)
    time.sleep(2.0)

    def started():
        info = job_info(job_id)
        if info.get("JobState") != "PENDING":
            return True
        if info.get("Reason") == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, timeout=30)
        return False

    wait_for(started, f"requeued job {job_id} to start", timeout=timeout, interval=1.0)


def cluster_nodes() -> int:
    """Nodes of the dev cluster (tools/slurm/dev_cluster.sh start --nodes N)."""
    r = subprocess.run(["sinfo", "-h", "-p", "high", "-o", "%D"], capture_output=True, text=True, timeout=30)
    return int(r.stdout.split()[0])


def preempt_with_high_job(tmp_path: Path, jobs: list) -> None:
    """A job in the `high` partition that needs every node, whole, preempts ours (GraceTime 30 s, REQUEUE).
    Returns once it has run: a victim started again before it (start_requeued_now) would be preempted
    a second time (seen with whole-node high jobs on the 2-node cluster)."""
    r = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "high",
            "--exclusive",
            "-N",
            str(cluster_nodes()),
            f"--chdir={tmp_path}",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    high = r.stdout.strip().split(";")[0]
    jobs.append(high)
    wait_for(lambda: job_info(high).get("JobState", "COMPLETED") in DONE, f"high job {high} to run", timeout=120)


def metrics_step(run_dir: Path) -> int:
    return slurm_cmds.progress(run_dir)["step"] or 0


def starts(run_dir: Path) -> list[dict]:
    p = run_dir / "standin_starts.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in slurm_events.read_events(run_dir) if e["event"] == kind]


def run_logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted((run_dir / "slurm").glob("*_log.*")))


@pytest.fixture
def standin_env(monkeypatch):
    """sbatch passes the submitter's environment to the job: set the stand-in's step time there."""
    monkeypatch.setenv("STANDIN_STEP_S", "0.2")
    return monkeypatch


def submit_standin(tmp_path: Path, jobs: list, *overrides: str, name: str = "run"):
    run_dir = tmp_path / name
    cfg = load_config(None, [f"run_dir={run_dir}", "checkpoint.every_steps=100", "slurm.timeout_min=5", *overrides])
    info = slurm_submit.submit(cfg, None, False, worker=STANDIN, out=io.StringIO())
    jobs.append(info.job_id)
    return run_dir, info


# ------------------------------------------------------------------------------------------------- srun


def test_srun_pmi2_gives_one_world_of_3(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(None, [f"run_dir={run_dir}", "total_steps=3", "slurm.snapshot_code=false"])
    slurm_submit.prepare_run_dir(cfg)
    env = {**os.environ, "STANDIN_STEP_S": "0.05"}
    r = subprocess.run(
        ["srun", "-n", "3", "--mpi=pmi2", "-t", "2", sys.executable, STANDIN, str(run_dir)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert [s["world"] for s in starts(run_dir)] == [3]
    assert metrics_step(run_dir) == 3
    # The failure mode this guards against: a plugin that does not wire up MPICH gives 3 worlds of 1.
    r = subprocess.run(
        ["srun", "-n", "3", "--mpi=none", "-t", "2", sys.executable, STANDIN, str(run_dir)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stderr.count("MPI world 1 != layout world 3") == 3


# ------------------------------------------------------------------------------------ jobs/ppo.sbatch


def _sbatch_template(tmp_path: Path, run_dir: Path, cfg_file: Path, step_s: str) -> str:
    env = {
        **os.environ,
        "HPC_RLHF_SETUP": f"export PATH={os.path.dirname(sys.executable)}:$PATH",
        "HPC_RLHF_WORKER": f"{sys.executable} {STANDIN}",
        "STANDIN_STEP_S": step_s,
    }
    r = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--chdir={tmp_path}",
            "--time=5",
            "--ntasks=3",
            TEMPLATE,
            str(run_dir),
            str(cfg_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def test_sbatch_template_runs_to_completion(tmp_path, jobs):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("total_steps: 5\ncheckpoint: {every_steps: 2}\n")
    run_dir = tmp_path / "run"
    job = _sbatch_template(tmp_path, run_dir, cfg_file, "0.05")
    jobs.append(job)
    info = wait_state(job, DONE, timeout=90)
    batch_log = (tmp_path / f"slurm-hpc_rlhf-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", batch_log + run_logs(run_dir)
    assert load_config(str(run_dir / "config.yaml")).total_steps == 5
    assert metrics_step(run_dir) == 5
    assert slurm_cmds.progress(run_dir)["checkpoint"] == "step_000005"
    assert [s["world"] for s in starts(run_dir)] == [3]
    assert (run_dir / "slurm" / f"{job}_2_log.out").exists()
    assert [e["job_id"] for e in events(run_dir, "submit")] == [job]  # status/logs/cancel know the job
    assert "ranks exited with status 0" in batch_log
    assert [(e["job_id"], e["status"]) for e in events(run_dir, "end")] == [(job, 0)]


def test_sbatch_template_owns_its_run_dir(tmp_path, jobs):
    """A second jobs/ppo.sbatch job on a run dir that a running one owns fails before writing anything; the
    lease (RUN_DIR/owner.json) names the running job, and is gone once it ended."""
    from hpc_rlhf.launch.lease import owner

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("total_steps: 40\ncheckpoint: {every_steps: 100}\n")
    run_dir = tmp_path / "run"
    first = _sbatch_template(tmp_path, run_dir, cfg_file, "0.1")
    jobs.append(first)
    wait_for(lambda: metrics_step(run_dir) >= 1, "the first job's first step", timeout=60)
    held = owner(str(run_dir))
    assert held is not None and held["slurm_job_id"] == first, held
    second = _sbatch_template(tmp_path, run_dir, cfg_file, "0.1")
    jobs.append(second)
    info = wait_state(second, DONE, timeout=60)
    log = (tmp_path / f"slurm-hpc_rlhf-{second}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    assert "is in use by" in log and f"Slurm job {first}" in log, log
    assert [e["job_id"] for e in events(run_dir, "submit")] == [first]  # the second wrote nothing
    done = wait_state(first, DONE, timeout=90)
    assert done["JobState"] == "COMPLETED", run_logs(run_dir)
    assert metrics_step(run_dir) == 40 and owner(str(run_dir)) is None


def test_sbatch_template_requeues_on_usr2_and_resumes(tmp_path, jobs):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("total_steps: 30\ncheckpoint: {every_steps: 100}\n")
    run_dir = tmp_path / "run"
    job = _sbatch_template(tmp_path, run_dir, cfg_file, "0.15")
    jobs.append(job)
    wait_for(lambda: metrics_step(run_dir) >= 3, "3 steps", timeout=60)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)  # what --signal=USR2@90 sends
    start_requeued_now(job)
    info = wait_state(job, DONE, timeout=90)
    batch_log = (tmp_path / f"slurm-hpc_rlhf-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", batch_log + run_logs(run_dir)
    first, second = starts(run_dir)
    assert first["start_step"] == 0 and second["start_step"] >= 3 and second["restart_count"] == 1
    assert metrics_step(run_dir) == 30
    assert len(events(run_dir, "requeue")) == 1
    assert "ranks exited with status 75" in batch_log


# ---------------------------------------------------------------------------------------- submitit path


def test_submit_status_logs(tmp_path, jobs, standin_env):
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=25")
    # The script submitit wrote is exactly the one --dry-run prints.
    cfg = load_config(str(run_dir / "config.yaml"))
    assert info.script == slurm_submit.render_sbatch(cfg, run_dir)
    assert (run_dir / "code" / "hpc_rlhf" / "launch" / "slurm_job.py").exists()
    wait_for(lambda: metrics_step(run_dir) >= 2, "2 steps", timeout=60)
    out = io.StringIO()
    st = slurm_cmds.status(run_dir, out=out)
    assert st["state"] == "RUNNING" and st["step"] >= 2, out.getvalue()
    assert f"job:        {info.job_id} RUNNING" in out.getvalue()
    with pytest.raises(UserError, match=f"already has Slurm job {info.job_id}"):
        slurm_submit.submit(cfg, None, False, worker=STANDIN, out=io.StringIO())
    wait_state(info.job_id, DONE, timeout=60)
    out = io.StringIO()
    st = slurm_cmds.status(run_dir, out=out)
    assert st["state"] == "COMPLETED" and st["step"] == 25 and st["checkpoint"] == "step_000025", out.getvalue()
    assert [(e["job_id"], e["status"], e["rank"]) for e in events(run_dir, "end")] == [(info.job_id, 0, 0)]
    out = io.StringIO()
    slurm_cmds.logs(run_dir, rank=1, out=out)
    assert "global_rank=1(3)" in out.getvalue() and f"{info.job_id}_1_log.err" in out.getvalue()
    out = io.StringIO()
    slurm_cmds.logs(run_dir, out=out)
    assert out.getvalue().count("==> ") == 6
    assert "standin: finished at step 25" in out.getvalue()


def test_submit_requeues_itself_on_usr2_within_budget_then_resume(tmp_path, jobs, standin_env):
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=200", "slurm.max_requeues=1")
    job = info.job_id
    wait_for(lambda: metrics_step(run_dir) >= 2, "2 steps", timeout=60)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    start_requeued_now(job)
    wait_for(lambda: len(starts(run_dir)) == 2, "the requeued job to start", timeout=60)
    assert starts(run_dir)[1]["start_step"] >= 2
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    done = wait_state(job, DONE, timeout=60)
    # Budget used up: the job ends with the worker's status and says how to go on.
    assert done["JobState"] == "FAILED" and done["ExitCode"].startswith("75:"), run_logs(run_dir)
    assert [e["n"] for e in events(run_dir, "requeue")] == [1]
    assert len(events(run_dir, "requeue_refused")) == 1
    assert "hpc-rlhf resume" in (run_dir / "slurm" / f"{job}_0_log.err").read_text()
    stopped_at = slurm_cmds.progress(run_dir)["checkpoint"]
    # resume: a new job from RUN_DIR/config.yaml, resuming from the checkpoint (a fresh requeue budget).
    cfg_file = run_dir / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("total_steps: 200", "total_steps: 12"))
    if int(stopped_at.split("_")[1]) >= 12:
        pytest.skip(f"the stand-in ran past step 12 before the second stop ({stopped_at})")
    info2 = slurm_cmds.resume(run_dir, out=io.StringIO(), worker=STANDIN)
    jobs.append(info2.job_id)
    assert info2.job_id != job and slurm_events.job_ids(run_dir) == [job, info2.job_id]
    assert wait_state(info2.job_id, DONE, timeout=60)["JobState"] == "COMPLETED", run_logs(run_dir)
    assert starts(run_dir)[-1]["start_step"] == int(stopped_at.split("_")[1])
    assert metrics_step(run_dir) == 12


def test_time_limit_signal_reaches_every_task(tmp_path, jobs, standin_env):
    """The real --signal=USR2@N of the submitit script (no B:) stops the worker before the time limit."""
    run_dir, info = submit_standin(
        tmp_path, jobs, "total_steps=100000", "slurm.timeout_min=1", "slurm.signal_delay_s=55", "slurm.max_requeues=0"
    )
    done = wait_state(info.job_id, DONE, timeout=75)
    # Stopped by the signal (75, with a checkpoint), not killed at the limit (TIMEOUT).
    assert done["JobState"] == "FAILED" and done["ExitCode"] == "75:0", run_logs(run_dir)
    assert slurm_cmds.progress(run_dir)["checkpoint"] is not None
    assert [e["max_requeues"] for e in events(run_dir, "requeue_refused")] == [0]
    assert not events(run_dir, "end"), "a job stopped for a requeue records no end"


def test_preemption_requeues_and_resumes(tmp_path, jobs, standin_env):
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=25")
    job = info.job_id
    wait_for(lambda: metrics_step(run_dir) >= 3, "3 steps", timeout=60)
    preempt_with_high_job(tmp_path, jobs)
    start_requeued_now(job)
    done = wait_state(job, DONE, timeout=90)
    assert done["JobState"] == "COMPLETED", run_logs(run_dir)
    assert int(done["Restarts"]) >= 1
    first, second = starts(run_dir)
    assert second["start_step"] >= 3, "the requeued job must resume from the checkpoint taken on the signal"
    assert metrics_step(run_dir) == 25


def test_cancel_stops_without_requeue(tmp_path, jobs, standin_env):
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=300")
    wait_for(lambda: metrics_step(run_dir) >= 2, "2 steps", timeout=60)
    assert slurm_cmds.cancel(run_dir, out=io.StringIO()) == [info.job_id]
    wait_state(info.job_id, "CANCELLED", timeout=60)
    wait_for(lambda: slurm_cmds.progress(run_dir)["checkpoint"], "the checkpoint on SIGTERM", timeout=30)
    time.sleep(1.5)
    assert job_info(info.job_id)["JobState"] == "CANCELLED"
    assert not events(run_dir, "requeue")
    out = io.StringIO()
    assert slurm_cmds.cancel(run_dir, out=out) == [] and "no active Slurm job" in out.getvalue()


def test_plain_scancel_is_not_undone_by_a_requeue(tmp_path, jobs, standin_env):
    """scancel sends SIGTERM: the worker checkpoints and exits 75, but the job must stay cancelled."""
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=300")
    wait_for(lambda: metrics_step(run_dir) >= 2, "2 steps", timeout=60)
    subprocess.run(["scancel", info.job_id], check=True, timeout=30)
    wait_for(lambda: events(run_dir, "requeue_skipped") or events(run_dir, "requeue"), "rank 0's decision", timeout=30)
    assert not events(run_dir, "requeue"), run_logs(run_dir)
    wait_state(info.job_id, "CANCELLED", timeout=60)


def test_wrong_mpi_plugin_fails_with_a_clear_error(tmp_path, jobs, standin_env):
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=3", "slurm.mpi_plugin=none")
    done = wait_state(info.job_id, DONE, timeout=60)
    assert done["JobState"] == "FAILED"
    err = (run_dir / "slurm" / f"{info.job_id}_0_log.err").read_text()
    assert "MPI world size 1 != SLURM_NTASKS 3" in err, err
    st = slurm_cmds.status(run_dir, out=io.StringIO())
    assert st["state"] == "FAILED"
    (end,) = events(run_dir, "end")  # rank 0 only: the same failure on every task
    assert end["status"] == 1 and end["error"].startswith("MPI world size 1 != SLURM_NTASKS 3"), end


def test_signal_before_the_worker_handlers_is_not_lost(tmp_path, jobs, standin_env):
    """Slurm signals once; a USR2 during the worker's start-up (imports) must still reach the worker."""
    standin_env.setenv("STANDIN_IMPORT_DELAY_S", "4")
    run_dir, info = submit_standin(tmp_path, jobs, "total_steps=100", "slurm.max_requeues=0")
    out0 = run_dir / "slurm" / f"{info.job_id}_0_log.out"
    wait_for(lambda: out0.exists() and "hpc_rlhf.slurm: job" in out0.read_text(), "the task to start", timeout=60)
    assert not starts(run_dir), "the stand-in must still be in its start-up pause"
    subprocess.run(["scancel", "--signal=USR2", info.job_id], check=True, timeout=30)
    done = wait_state(info.job_id, DONE, timeout=60)
    assert done["ExitCode"].startswith("75:"), run_logs(run_dir)
    assert slurm_cmds.progress(run_dir)["checkpoint"] == "step_000001"
    assert "passing the early SIGUSR2 on to the worker" in (run_dir / "slurm" / f"{info.job_id}_0_log.err").read_text()


# Long enough that the preemption lands mid-run: Slurm takes a few seconds to preempt, and a tiny step is
# ~0.1 s (at 20 steps the run once finished first, and the late USR2 failed the job: see _EarlySignals.stop).
REAL_STEPS = 200


# Layout 1+1+2 on 2 nodes x 2 tasks, placed so that training (node 0: ranks 0-1) and generation (node 1)
# run on different nodes; the layout alone is what the one-node reference run uses.
TWO_NODE_LAYOUT = ["layout.train=2", "generate.shards_per_step=4"]
TWO_NODES = ["slurm.nodes=2", "placement.generate=1", "placement.train=0", *TWO_NODE_LAYOUT]


@pytest.mark.slow
def test_real_worker_preempted_resumes_and_finishes(tmp_path, jobs, tiny_rm, two_nodes):
    """The real worker (configs/tiny.yaml) under submitit, a job of 2 nodes with generation and training on
    different nodes: preempted by a `high` job, requeues, resumes, ends bit-identical to the same layout
    run uninterrupted on one node."""
    run_dir = tmp_path / "real"
    cfg = load_config(
        str(REPO / "configs" / "tiny.yaml"),
        [
            f"run_dir={run_dir}",
            f"total_steps={REAL_STEPS}",
            "checkpoint.every_steps=1000",
            "slurm.timeout_min=5",
            *TWO_NODES,
            *tiny_rm["overrides"],
        ],
    )
    info = slurm_submit.submit(cfg, None, False, out=io.StringIO())
    jobs.append(info.job_id)
    wait_for(lambda: metrics_step(run_dir) >= 1, "the first PPO step", timeout=120)
    ranks = {r: json.loads((run_dir / ".ranks" / f"rank_{r:05d}.json").read_text()) for r in range(4)}
    assert [ranks[r]["role"] for r in range(4)] == ["train", "train", "generate", "score"], ranks
    assert ranks[0]["host"] == ranks[1]["host"] != ranks[2]["host"] == ranks[3]["host"], ranks
    logs = run_logs(run_dir)
    assert "hpc_rlhf.nodes: node 0: host node1, ranks 0-1" in logs and "node 1: host node2, ranks 2-3" in logs, logs
    # one owner per run dir: a local resume and a second submission are refused, naming the job
    p = subprocess.run(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert p.returncode == 2 and f"already has Slurm job {info.job_id} (RUNNING)" in p.stderr, p.stderr
    with pytest.raises(UserError, match=f"Slurm job {info.job_id}"):
        slurm_submit.submit(cfg, None, False, out=io.StringIO())
    shown = io.StringIO()
    slurm_cmds.status(run_dir, out=shown)
    assert f"(hpc-rlhf slurm job, Slurm job {info.job_id})" in shown.getvalue(), shown.getvalue()
    preempt_with_high_job(tmp_path, jobs)
    start_requeued_now(info.job_id)
    stopped_at = slurm_cmds.progress(run_dir)["checkpoint"]
    assert stopped_at is not None, "the worker must checkpoint on the preemption signal\n" + run_logs(run_dir)
    done = wait_state(info.job_id, DONE, timeout=150)
    assert done["JobState"] == "COMPLETED" and int(done["Restarts"]) >= 1, run_logs(run_dir)
    assert [e["n"] for e in events(run_dir, "requeue")] == [1]
    assert slurm_cmds.progress(run_dir)["checkpoint"] == f"step_{REAL_STEPS:06d}"
    assert int(stopped_at.split("_")[1]) < REAL_STEPS
    # the same config and layout, uninterrupted, locally: the final weights are bit-identical
    ref = tmp_path / "uninterrupted"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hpc_rlhf.launch.cli",
            "train",
            str(REPO / "configs" / "tiny.yaml"),
            f"run_dir={ref}",
            f"total_steps={REAL_STEPS}",
            "checkpoint.every_steps=1000",
            *TWO_NODE_LAYOUT,
            *tiny_rm["overrides"],
        ],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=REPO,
    )
    sha = [
        hashlib.sha256((d / "final" / "policy" / "model.safetensors").read_bytes()).hexdigest() for d in (run_dir, ref)
    ]
    assert sha[0] == sha[1], "the preempted 2-node run must end bit-identical to an uninterrupted one-node one"


@pytest.mark.slow
def test_a_killed_or_stopped_rank_ends_the_job_naming_it_without_requeue(tmp_path, jobs, tiny_rm, two_nodes):
    """SIGKILL of the generation, scoring and training rank, and SIGSTOP of the scoring rank, of four real
    jobs side by side with the default timeouts, and SIGKILL of a training rank on the second node of a
    2-node job (ranks 0-1 on node1, 2-3 on node2): each job leaves RUNNING in under 60 s, FAILED, not
    requeued, with the rank, its role, pid and host in its log and the cause in `hpc-rlhf status`."""
    one = ("", [])
    cases = [
        ("kill", 0, "generate", one),
        ("kill", 1, "score", one),
        ("kill", 2, "train", one),
        ("stop", 1, "score", one),
    ]
    cases.append(("kill", 2, "train", ("node2", ["slurm.nodes=2", *TWO_NODE_LAYOUT])))
    runs = []
    for how, r, role, (host, shape) in cases:
        run_dir = tmp_path / f"{how}{r}{host}"
        over = [f"run_dir={run_dir}", "total_steps=400", "checkpoint.every_steps=1000", "slurm.timeout_min=10"]
        over.append("runtime.wait_timeout_s=600")  # the default (tiny.yaml sets 60): no wait times out first
        cfg = load_config(str(REPO / "configs" / "tiny.yaml"), [*over, *shape, *tiny_rm["overrides"]])
        info = slurm_submit.submit(cfg, None, False, out=io.StringIO())
        jobs.append(info.job_id)
        runs.append((how, r, role, run_dir, info.job_id, host))
    for _how, _r, _role, run_dir, _job, _host in runs:
        wait_for(lambda d=run_dir: metrics_step(d) >= 1, f"the first PPO step of {run_dir.name}", timeout=240)
    victims, left = {}, {}
    try:
        for how, r, _role, run_dir, job, _host in runs:
            pid = json.loads((run_dir / ".ranks" / f"rank_{r:05d}.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            victims[job] = (pid, time.monotonic())
        end = time.monotonic() + 120
        while len(left) < len(runs) and time.monotonic() < end:
            for *_, job, _host in runs:
                if job not in left and job_info(job).get("JobState") != "RUNNING":
                    left[job] = time.monotonic() - victims[job][1]
            time.sleep(0.5)
    finally:
        for pid, _ in victims.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for how, r, role, run_dir, job, host in runs:
        pid = victims[job][0]
        assert job in left, f"{how} of rank {r}: job {job} still RUNNING 120 s later\n" + run_logs(run_dir)
        assert left[job] < 60, f"{how} of rank {r}: job {job} left RUNNING after {left[job]:.0f} s"
        done = wait_state(job, DONE, timeout=60)
        assert done["JobState"] == "FAILED" and int(done["Restarts"]) == 0, done
        assert not events(run_dir, "requeue"), "a crashed job must not be requeued"
        logs = run_logs(run_dir)
        assert f"rank {r} ({role} #0, pid {pid} on {host}" in logs, logs
        how_seen = "heartbeat" if "sent no heartbeat" in logs else "other"
        print(f"{how} rank {r} ({role}): left RUNNING after {left[job]:.1f} s, seen by {how_seen}")
        shown = io.StringIO()
        slurm_cmds.status(run_dir, out=shown)
        assert f"rank {r} ({role} #0, pid {pid} on {host}" in shown.getvalue(), shown.getvalue()
