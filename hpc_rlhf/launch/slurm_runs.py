"""A run on Slurm once submitted: its state and progress, its logs; cancel it, or submit it again.

    status(run_dir)        # `hpc-rlhf status RUN_DIR` of any run: progress, rate, ETA, last metrics, owner, and
                           # on Slurm the latest job's state, how it ended and every attempt
    cancel(run_dir)        # `hpc-rlhf cancel RUN_DIR`: scancel; the job will not requeue itself
    logs(run_dir, rank)    # `hpc-rlhf logs RUN_DIR [--rank N]`
    resume(run_dir)        # `hpc-rlhf submit --resume RUN_DIR`: the run again from RUN_DIR/config.yaml, event `resume`

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
from collections.abc import Sequence
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
from hpc_rlhf.monitor.progress import progress_lines, run_progress
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


def _job_line(run_dir: Path, job_id: str, events: list[dict]) -> tuple[str, dict[str, Any]]:
    """The `job:` line of status and what Slurm (or, once Slurm forgot it, the job's own end event) says."""
    info = slurm_state(job_id)
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
    if info["state"] == "RUNNING" and info.get("reason"):  # squeue's %R is the node list of a running job
        info["nodes"] = info.pop("reason")
    shown = ("partition", "nodes", "elapsed", "reason", "exit_code")
    extra = [f"{k} {info[k]}" for k in shown if info.get(k) not in (None, "", "None", "(null)")]
    if info.get("restarts"):
        extra.append(f"restarts {info['restarts']}")
    if info["self_requeues"]:
        extra.append(f"self-requeues {info['self_requeues']}")
    if info["cancelled"]:
        extra.append("cancel requested")
    return f"{job_id} {info['state']} [{info['source']}]{' (' + ', '.join(extra) + ')' if extra else ''}", info


def _ended(events: list[dict], job_id: str) -> Optional[str]:
    """'exit S (rank R): why' of the job's first failing end event, else None."""
    ends = [e for e in events if e.get("event") == "end" and str(e.get("job_id")) == job_id]
    end = next((e for e in ends if e.get("status")), None)  # the first failure named is the cause
    if end is None:
        return None
    return f"exit {end['status']} (rank {end.get('rank', '?')}): {end.get('error') or 'see hpc-rlhf logs RUN_DIR'}"


def attempt_lines(run_dir: Path, events: list[dict], latest: str, latest_state: str) -> list[str]:
    """One line per Slurm job of the run, oldest first: id, how it was submitted, when, its state, its end."""
    lines = []
    for e in [e for e in events if e.get("event") in ("submit", "resume")]:
        job_id = str(e["job_id"])
        state = latest_state if job_id == latest else _job_line(run_dir, job_id, events)[1]["state"]
        why = _ended(events, job_id)
        lines.append(f"  {job_id:>8}  {e['event']:6}  {e.get('time', '?')}  {state}{'  ' + why if why else ''}")
    return lines


def status(run_dir: str | Path, out: Optional[TextIO] = None) -> dict[str, Any]:
    """Print and return where a run stands, local or on Slurm: progress, rate, ETA and last metrics
    (monitor/progress.py), the newest checkpoint, the owner; for a run on Slurm its latest job's state, how
    it ended, and every attempt (RUN_DIR/slurm/jobs.jsonl)."""
    out = out or sys.stdout
    run_dir = _run_dir(run_dir)
    ids = job_ids(run_dir)
    if not ids and not Path(RunDir(str(run_dir)).config).exists():
        raise UserError(f"'{run_dir}' is not a run directory (no config.yaml and no Slurm job recorded)")
    events = read_events(run_dir)
    prog = run_progress(str(run_dir))
    info: dict[str, Any] = {"state": None, "source": None}
    lines = [f"run:        {run_dir}"]
    if ids:
        job, info = _job_line(run_dir, ids[-1], events)
        lines.append(f"job:        {job}")
    lines += progress_lines(prog)
    holder = owner(str(run_dir))
    lines.append(f"owner:      {describe(holder) if holder else 'none'}")
    if ids:
        why = _ended(events, ids[-1])
        lines += [f"ended:      {why}"] if why else []
        lines += [f"attempts:   {len(ids)} Slurm job(s), oldest first"] + attempt_lines(
            run_dir, events, ids[-1], info["state"]
        )
    out.write("\n".join(lines) + "\n")
    out.flush()
    info.update(progress(run_dir), total_steps=prog.total, run_dir=str(run_dir), jobs=ids, owner=holder, progress=prog)
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
    run_dir: str | Path, dry_run: bool = False, out: Optional[TextIO] = None, overrides: Sequence[str] = (), **kw: Any
) -> slurm_submit.SubmitInfo:
    """Submit the run again from RUN_DIR/config.yaml (with `overrides`, which prepare_run refuses unless
    resume-safe); the worker resumes from its latest checkpoint. `hpc-rlhf submit --resume RUN_DIR`."""
    run_dir = _run_dir(run_dir)
    path = Path(RunDir(str(run_dir)).config)
    if not path.exists():
        raise UserError(f"{path} does not exist: not a run dir")
    cfg = load_config(str(path), [*overrides, f"run_dir={run_dir}"])
    return slurm_submit.submit(cfg, str(path), dry_run, event="resume", out=out, **kw)
