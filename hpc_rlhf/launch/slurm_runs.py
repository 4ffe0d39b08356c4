"""A run on Slurm once submitted: its state and progress, its logs; cancel it, or submit it again.

    status(run_dir)        # `hpc-rlhf status RUN_DIR`: the latest job's Slurm state, progress, owner, how it ended
    cancel(run_dir)        # `hpc-rlhf cancel RUN_DIR`: scancel; the job will not requeue itself
    logs(run_dir, rank)    # `hpc-rlhf logs RUN_DIR [--rank N]`
    resume(run_dir)        # submit the run again from RUN_DIR/config.yaml (launch/slurm_submit.py, event `resume`)

The commands are defined in launch/cli.py; these functions raise `UserError` (one line) for it to print.

A run's Slurm job ids are in RUN_DIR/slurm/jobs.jsonl (see hpc_rlhf.launch.slurm_events); its progress is read
from RUN_DIR: the last line of metrics.jsonl ({"step": N, ...}) and the newest committed checkpoint
(RUN_DIR/checkpoints/step_XXXXXX holding a COMMITTED file).

The steps of the plain sbatch template jobs/ppo.sbatch are in hpc_rlhf.launch.sbatch_steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from hpc_rlhf.checkpoint.store import list_checkpoints
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch import slurm_submit
from hpc_rlhf.launch.lease import describe, owner
from hpc_rlhf.launch.slurm_events import (
    ACTIVE_STATES,
    JOBS_FILE,
    job_end,
    job_ids,
    jobs_file,
    read_events,
    record_event,
    squeue_state,
)
from hpc_rlhf.rundir import RunDir


def _run_dir(run_dir: str | Path) -> Path:
    p = Path(run_dir).expanduser().absolute()
    if not p.is_dir():
        raise UserError(f"run dir '{run_dir}' does not exist")
    return p


def _require_jobs(run_dir: Path) -> list[str]:
    ids = job_ids(run_dir)
    if not ids:
        raise UserError(
            f"no Slurm job recorded for {run_dir} (no {jobs_file(run_dir)}); submit it with hpc-rlhf submit"
        )
    return ids


# ------------------------------------------------------------------------------------------------ status


def _cmd(args: list[str]) -> Optional[subprocess.CompletedProcess]:
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_state(job_id: str) -> dict[str, Any]:
    """What Slurm says of a job: squeue first, then scontrol (recent jobs), then sacct (if accounting is on)."""
    info: dict[str, Any] = {"job_id": job_id, "state": None, "source": None}
    r = _cmd(["squeue", "-h", "-j", job_id, "-o", "%T|%M|%l|%P|%R"])
    if r is not None and r.returncode == 0 and r.stdout.strip():
        state, elapsed, limit, part, reason = (r.stdout.strip().splitlines()[0].split("|") + [""] * 5)[:5]
        info.update(state=state, elapsed=elapsed, time_limit=limit, partition=part, reason=reason, source="squeue")
    r = _cmd(["scontrol", "-o", "show", "job", job_id])
    if r is not None and r.returncode == 0 and r.stdout.strip():
        fields = dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)
        info.setdefault("partition", fields.get("Partition"))
        info["restarts"] = int(fields.get("Restarts", "0") or 0)
        info["exit_code"] = fields.get("ExitCode")
        if info["state"] is None:
            info.update(state=fields.get("JobState"), reason=fields.get("Reason"), source="scontrol")
    if info["state"] is None:
        r = _cmd(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,Elapsed"])
        if r is not None and r.returncode == 0 and r.stdout.strip():
            state, code, elapsed = (r.stdout.strip().splitlines()[0].split("|") + [""] * 3)[:3]
            info.update(state=state.split()[0], exit_code=code, elapsed=elapsed, source="sacct")
    return info


def progress(run_dir: str | Path) -> dict[str, Any]:
    """Last metrics step and newest committed checkpoint of a run dir."""
    run_dir = Path(run_dir)
    out: dict[str, Any] = {"step": None, "checkpoint": None}
    metrics = Path(RunDir(str(run_dir)).metrics)
    if metrics.exists():
        with open(metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        for line in reversed(lines):
            try:
                out["step"] = json.loads(line).get("step")
                break
            except (json.JSONDecodeError, AttributeError):
                continue  # a partly written last line
    done = [c for c in list_checkpoints(str(run_dir), check=False) if c.valid]  # committed (marker present)
    out["checkpoint"] = os.path.basename(done[-1].path) if done else None
    return out


def status(run_dir: str | Path, out: Optional[TextIO] = None) -> dict[str, Any]:
    """Print and return the Slurm state and the progress of a run."""
    out = out or sys.stdout
    run_dir = _run_dir(run_dir)
    ids = _require_jobs(run_dir)
    job_id = ids[-1]
    info = slurm_state(job_id)
    events = read_events(run_dir)
    mine = [e for e in events if str(e.get("job_id")) == job_id]
    info["self_requeues"] = sum(1 for e in mine if e.get("event") == "requeue")
    info["cancelled"] = any(e.get("event") == "cancel" for e in mine)
    if info["state"] is None:  # Slurm forgot the job (no accounting): what the job itself recorded
        end = job_end(events, job_id)
        if end is None:
            info.update(state="UNKNOWN", source="none (not in squeue; accounting off?)")
        else:
            ended = "COMPLETED" if end.get("status") == 0 else "FAILED"
            info.update(state=ended, exit_code=end.get("status"), source=f"{JOBS_FILE} end event")
    prog = progress(run_dir)
    try:
        total = load_config(RunDir(str(run_dir)).config).total_steps
    except Exception:
        total = None
    info.update(prog, total_steps=total, run_dir=str(run_dir), jobs=ids)
    state = info["state"]
    if state == "RUNNING" and info.get("reason"):  # squeue's %R is the node list of a running job
        info["nodes"] = info.pop("reason")
    shown = ("partition", "nodes", "elapsed", "reason", "exit_code")
    extra = [f"{k} {info[k]}" for k in shown if info.get(k) not in (None, "", "None", "(null)")]
    if info.get("restarts"):
        extra.append(f"restarts {info['restarts']}")
    if info["self_requeues"]:
        extra.append(f"self-requeues {info['self_requeues']}")
    if info["cancelled"]:
        extra.append("cancel requested")
    step = "-" if prog["step"] is None else str(prog["step"])
    out.write(
        f"run:        {run_dir}\n"
        f"job:        {job_id} {state} [{info['source']}]{' (' + ', '.join(extra) + ')' if extra else ''}\n"
        f"progress:   last logged step {step}{' (total_steps ' + str(total) + ')' if total is not None else ''}\n"
        f"checkpoint: {prog['checkpoint'] or '-'}\n"
    )
    holder = owner(str(run_dir))
    out.write(f"owner:      {describe(holder) if holder else 'none'}\n")
    failed = [e for e in read_events(run_dir) if e.get("event") == "end" and str(e.get("job_id")) == job_id]
    end = next((e for e in failed if e.get("status")), None)  # the first failure named is the cause
    if end is not None:
        why = end.get("error") or "see the logs (hpc-rlhf logs RUN_DIR)"
        out.write(f"ended:      exit {end['status']} (rank {end.get('rank', '?')}): {why}\n")
    if len(ids) > 1:
        out.write(f"jobs:       {' '.join(ids)}\n")
    out.flush()
    info["owner"] = holder
    return info


# ------------------------------------------------------------------------------------- cancel, logs, resume


def cancel(run_dir: str | Path, out: Optional[TextIO] = None) -> list[str]:
    """scancel the run's job(s) that Slurm still has; the job will not requeue itself afterwards."""
    out = out or sys.stdout
    run_dir = _run_dir(run_dir)
    ids = _require_jobs(run_dir)
    if shutil.which("scancel") is None:
        raise UserError("scancel not found: run this on a Slurm login node")
    cancelled = []
    for job_id in ids:
        state = squeue_state(job_id)
        if state is None or state not in ACTIVE_STATES:
            continue
        record_event(run_dir, "cancel", job_id=job_id)  # first: rank 0 checks it before requeueing
        r = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise UserError(f"scancel {job_id} failed: {(r.stderr or r.stdout).strip()}")
        cancelled.append(job_id)
        out.write(f"cancelled Slurm job {job_id} ({state})\n")
    if not cancelled:
        out.write(f"no active Slurm job for {run_dir} (jobs: {' '.join(ids)})\n")
    out.flush()
    return cancelled


def log_files(run_dir: str | Path, rank: Optional[int] = None, job_id: Optional[str] = None) -> list[Path]:
    run_dir = _run_dir(run_dir)
    job_id = job_id or _require_jobs(run_dir)[-1]
    folder = Path(RunDir(str(run_dir)).slurm)
    if rank is None:
        ranks = sorted(
            {int(p.name.split("_")[1]) for p in folder.glob(f"{job_id}_*_log.*") if p.name.split("_")[1].isdigit()}
        )
    else:
        ranks = [rank]
    return [folder / f"{job_id}_{r}_log.{ext}" for r in ranks for ext in ("out", "err")]


def logs(run_dir: str | Path, rank: Optional[int] = None, out: Optional[TextIO] = None) -> int:
    """Print the submitit stdout and stderr of one task (rank) of the latest job, or of every task."""
    out = out or sys.stdout
    files = log_files(run_dir, rank)
    if not files:
        raise UserError(f"no logs yet for the latest job of {run_dir} (still pending?)")
    shown = 0
    for path in files:
        if not path.exists():
            continue
        out.write(f"==> {path} <==\n")
        out.write(path.read_text(errors="replace"))
        shown += 1
    if not shown:
        raise UserError(f"no log file {files[0].name} (rank {rank}) in {files[0].parent}; the job may not have started")
    out.flush()
    return 0


def resume(
    run_dir: str | Path, dry_run: bool = False, out: Optional[TextIO] = None, **kw: Any
) -> slurm_submit.SubmitInfo:
    """Submit the run again from RUN_DIR/config.yaml; the worker resumes from its latest checkpoint."""
    run_dir = _run_dir(run_dir)
    path = Path(RunDir(str(run_dir)).config)
    if not path.exists():
        raise UserError(f"{path} does not exist: not a run dir")
    cfg = load_config(str(path), [f"run_dir={run_dir}"])
    return slurm_submit.submit(cfg, str(path), dry_run, event="resume", out=out, **kw)
