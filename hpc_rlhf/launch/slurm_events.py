"""RUN_DIR/slurm/jobs.jsonl: the event log of a run's Slurm jobs, shared by the submitting and the in-job side.

    record_event(run_dir, "submit", job_id="123", num_tasks=3)
    job_ids(run_dir)                                  # ["123"]: one per submit/resume, oldest first

One JSON object per line, {"event": KIND, "time": ISO time, "job_id": ..., ...}, appended (a line cut by a
kill is skipped when read). The kinds:
- `submit`, `resume`: a job was submitted for the run (by `hpc-rlhf submit|resume`, or by jobs/ppo.sbatch).
- `cancel`: `hpc-rlhf cancel` asked Slurm to cancel the job; written first, so rank 0 does not requeue it.
- `requeue`: rank 0 requeued the job after the worker checkpointed on a stop signal (`n` counts them per
  job id against slurm.max_requeues); `requeue_refused` (budget used up), `requeue_skipped` (the job is not
  RUNNING: scancel), `requeue_failed` (scontrol refused, e.g. Slurm is already requeueing it).
- `end`: the job's tasks left for good with exit `status` (0 = the run finished, anything else but the
  requeue status = failed; `rank`, `restarts`, and `error`, the first line of an exception). Written in the
  job (hpc_rlhf.launch.slurm_job; jobs/ppo.sbatch through `sbatch_cmds end`); `hpc-rlhf status` reports from
  it once Slurm has forgotten the job. A job that stops to be requeued writes none (the run is not over).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from hpc_rlhf.errors import UserError
from hpc_rlhf.rundir import JOBS, RunDir

JOBS_FILE = JOBS


def jobs_file(run_dir: str | Path) -> Path:
    """RUN_DIR/slurm/jobs.jsonl."""
    return Path(RunDir(str(run_dir)).jobs)


def record_event(run_dir: str | Path, event: str, **fields: Any) -> None:
    """Append one event (see the module docstring for the kinds) to RUN_DIR/slurm/jobs.jsonl."""
    path = jobs_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_events(run_dir: str | Path) -> list[dict]:
    """Every event of the run, oldest first ([] when there is no jobs.jsonl)."""
    path = jobs_file(run_dir)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: skip it
    return out


def job_ids(run_dir: str | Path) -> list[str]:
    """Slurm job ids of the run, oldest first (one per submit/resume)."""
    return [str(e["job_id"]) for e in read_events(run_dir) if e.get("event") in ("submit", "resume")]


def job_end(events: list[dict], job_id: str) -> Optional[dict]:
    """The last `end` event of job `job_id` among `events` (from read_events), or None."""
    ends = [e for e in events if e.get("event") == "end" and str(e.get("job_id")) == str(job_id)]
    return ends[-1] if ends else None


ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "SUSPENDED",
    "STOPPED",
}


def squeue_state(job_id: str) -> Optional[str]:
    """The job's state per squeue, or None when squeue does not know the job (or is not installed)."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip().splitlines()
    return state[0].strip() if r.returncode == 0 and state else None


def job_active(job_id: str) -> Optional[bool]:
    """Whether Slurm still runs or queues the job; None when there is no squeue here to ask."""
    if shutil.which("squeue") is None:
        return None
    return squeue_state(job_id) in ACTIVE_STATES


def job_ended(job_id: str) -> Optional[str]:
    """The final state of a Slurm job that has ended (squeue lists it no more, or in a final state; sacct's
    state when accounting answers), or None while it may still be queued or running, or when there is no
    squeue here to ask or squeue fails (a lease is then judged by its expiry alone)."""
    if shutil.which("squeue") is None:
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip().splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else None
    if state in ACTIVE_STATES:
        return None
    if state is None and r.returncode != 0 and "invalid job id" not in r.stderr.lower():
        return None  # squeue failed (slurmctld unreachable): no verdict
    final = state or "gone from squeue"
    if shutil.which("sacct") is not None:
        try:
            a = subprocess.run(
                ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            got = a.stdout.strip().splitlines()
            if a.returncode == 0 and got and got[0].strip():
                final = got[0].split()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None if final in ACTIVE_STATES else final


def check_no_active_job(run_dir: str | Path) -> None:
    """UserError (one line) when a Slurm job of the run is still queued or running."""
    ids = job_ids(run_dir)
    if not ids or shutil.which("squeue") is None:
        return
    for job_id in reversed(ids):
        state = squeue_state(job_id)
        if state in ACTIVE_STATES:
            raise UserError(
                f"run dir {run_dir} already has Slurm job {job_id} ({state}); cancel it first "
                f"(hpc-rlhf cancel {run_dir}) or use another run_dir"
            )
