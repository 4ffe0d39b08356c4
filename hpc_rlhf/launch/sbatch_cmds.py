"""The helpers of the plain sbatch template jobs/ppo.sbatch (`hpc-rlhf submit` does not use them):

    python -m hpc_rlhf.launch.sbatch_cmds hold RUN_DIR      # own the run dir (its lease) until stdin closes
    python -m hpc_rlhf.launch.sbatch_cmds prepare RUN_DIR [CONFIG [key=value...]]   # write/check config.yaml
    python -m hpc_rlhf.launch.sbatch_cmds requeue RUN_DIR --if-exit RC   # the counted self-requeue
    python -m hpc_rlhf.launch.sbatch_cmds end RUN_DIR RC    # the `end` event `hpc-rlhf status` reports from

(`python -m hpc_rlhf.launch.slurm_cmds ...` still runs them, for copies of the template made before.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch import slurm_submit
from hpc_rlhf.launch.slurm_events import job_ids, record_event
from hpc_rlhf.launch.slurm_job import requeue_self
from hpc_rlhf.rundir import RunDir


def prepare(run_dir: str, config: Optional[str] = None, overrides: tuple[str, ...] = ()) -> int:
    """Write RUN_DIR/config.yaml from CONFIG (if given), check it, and check SLURM_NTASKS against the layout."""
    if config is not None:
        cfg = load_config(config, [*overrides, f"run_dir={Path(run_dir).absolute()}"])
        slurm_submit.prepare_run_dir(cfg)
    path = Path(RunDir(str(run_dir)).config)
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a CONFIG to create the run")
    cfg = load_config(str(path))
    ntasks = os.environ.get("SLURM_NTASKS")
    if ntasks is not None and int(ntasks) != cfg.layout.world_size:
        raise UserError(
            f"the job has SLURM_NTASKS={ntasks} tasks but the layout world size is {cfg.layout.world_size}; "
            f"sbatch --ntasks={cfg.layout.world_size}"
        )
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id and job_id not in job_ids(run_dir):  # so that status/logs/cancel know the job
        record_event(run_dir, "submit", job_id=job_id, config=config, num_tasks=int(ntasks or 0), via="sbatch")
    return 0


def hold(run_dir: str) -> int:
    """Own RUN_DIR for this batch job (jobs/ppo.sbatch) until stdin closes: print `owned` once the lease is
    taken (a requeued job takes its own over), or one `error: ...` line naming the live owner and return 2.
    The lease is renewed meanwhile; lost to another owner, the job is cancelled (it must not write on)."""
    from hpc_rlhf.config.schema import RuntimeConfig
    from hpc_rlhf.launch.lease import acquire

    job_id = os.environ.get("SLURM_JOB_ID")
    cfg_path = RunDir(run_dir).config
    ttl = load_config(cfg_path).runtime.lease_ttl_s if os.path.exists(cfg_path) else RuntimeConfig.lease_ttl_s
    try:
        lease = acquire(run_dir, "slurm job (jobs/ppo.sbatch)", ttl, slurm_job_id=job_id)
    except UserError as e:
        print(f"error: {e}", flush=True)
        return 2

    def lost(msg: str) -> None:
        print(f"error: {msg}; cancelling job {job_id}", file=sys.stderr, flush=True)
        if job_id:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        os._exit(1)

    lease.start_renewing(lost)
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):  # preemption signals are for the ranks:
        signal.signal(sig, signal.SIG_IGN)  # hold on until the batch script, which outlives them, ends
    print("owned", flush=True)
    sys.stdin.read()  # until the batch script closes the pipe or ends
    lease.release()
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpc_rlhf.launch.sbatch_cmds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write/check RUN_DIR/config.yaml and the task count")
    p.add_argument("run_dir")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("hold", help="own RUN_DIR (its lease) for this job until stdin closes")
    p.add_argument("run_dir")
    p = sub.add_parser("requeue", help="scontrol requeue $SLURM_JOB_ID, counted against slurm.max_requeues")
    p.add_argument("run_dir")
    p.add_argument("--if-exit", type=int, default=None, help="only if this is runtime.requeue_exit_code")
    p = sub.add_parser("end", help="record the job's end in jobs.jsonl, unless STATUS asks for a requeue")
    p.add_argument("run_dir")
    p.add_argument("status", type=int, help="the ranks' exit status (srun's)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "prepare":
            return prepare(args.run_dir, args.config, tuple(args.overrides))
        if args.cmd == "hold":
            return hold(args.run_dir)
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id:
            raise UserError("SLURM_JOB_ID is not set: run this inside the job")
        cfg = load_config(RunDir(args.run_dir).config)
        if args.cmd == "end":
            if args.status != cfg.runtime.requeue_exit_code:  # the same rule as SlurmTask's `end` events
                restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
                record_event(args.run_dir, "end", job_id=job_id, status=args.status, restarts=restarts, via="sbatch")
            return 0
        if args.if_exit is not None and args.if_exit != cfg.runtime.requeue_exit_code:
            return 0
        return 0 if requeue_self(args.run_dir, cfg, job_id) else 1
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
