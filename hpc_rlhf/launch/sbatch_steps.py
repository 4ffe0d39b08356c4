"""The steps of the plain sbatch template jobs/ppo.sbatch (`hpc-rlhf submit` does not use them), run as

    hpc-rlhf job hold RUN_DIR      # own the run dir (its lease) until stdin closes
    hpc-rlhf job prepare RUN_DIR [CONFIG [key=value...]]   # write/check config.yaml
    hpc-rlhf job requeue RUN_DIR --if-exit RC   # the counted self-requeue
    hpc-rlhf job end RUN_DIR RC    # the `end` event `hpc-rlhf status` reports from

or, as the template does, `python -m hpc_rlhf.launch.sbatch_cmds hold|prepare|requeue|end ...` (the same
commands; `python -m hpc_rlhf.launch.slurm_cmds ...` too, for copies of the template made before).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from hpc_rlhf.config import Config, load_config
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


def _job_config(run_dir: str) -> tuple[str, Config]:
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise UserError("SLURM_JOB_ID is not set: run this inside the job")
    return job_id, load_config(RunDir(run_dir).config)


def requeue(run_dir: str, if_exit: Optional[int] = None) -> int:
    """`scontrol requeue` this job, counted against slurm.max_requeues; with `if_exit`, only when that is
    runtime.requeue_exit_code (the ranks asked for it). 0: requeued or not asked; 1: refused."""
    job_id, cfg = _job_config(run_dir)
    if if_exit is not None and if_exit != cfg.runtime.requeue_exit_code:
        return 0
    return 0 if requeue_self(run_dir, cfg, job_id) else 1


def end(run_dir: str, status: int) -> int:
    """Record the job's end (the ranks' exit status) in jobs.jsonl, unless the status asks for a requeue: the
    same rule as SlurmTask's `end` events; `hpc-rlhf status` reports from it once Slurm forgot the job."""
    job_id, cfg = _job_config(run_dir)
    if status != cfg.runtime.requeue_exit_code:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        record_event(run_dir, "end", job_id=job_id, status=status, restarts=restarts, via="sbatch")
    return 0
