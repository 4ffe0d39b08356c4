"""A stand-in for `python -m hpc_rlhf.launch.worker RUN_DIR`, used by the Slurm tests until the real worker exists.

It keeps the worker's contract (see hpc_rlhf/launch/slurm_job.py) and nothing else:
- reads RUN_DIR/config.yaml; the MPI world size must equal the layout's (exit 3 otherwise);
- installs SIGUSR2/SIGTERM handlers that only set a flag; the ranks agree on it at each step boundary;
- resumes from the latest committed checkpoint RUN_DIR/checkpoints/step_XXXXXX (a COMMITTED file in it);
- appends {"step": N, ...} to RUN_DIR/metrics.jsonl each step (rank 0);
- on a stop signal: checkpoints and exits `runtime.requeue_exit_code` (75); after `total_steps`: exits 0.
Rank 0 also appends one line per start to RUN_DIR/standin_starts.jsonl (job id, restart count, first step)
so tests can see that a requeued job resumed. STANDIN_STEP_S (default 0.2) is the time of one step;
STANDIN_IMPORT_DELAY_S (default 0) a pause before the handlers are installed (the real worker imports torch).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _latest_step(ckpt_dir: Path) -> int:
    steps = [
        int(p.name.split("_")[1])
        for p in ckpt_dir.glob("step_*")
        if (p / "COMMITTED").exists() and p.name.split("_")[1].isdigit()
    ]
    return max(steps, default=0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    from hpc_rlhf.config import load_config

    cfg = load_config(str(run_dir / "config.yaml"))
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.size != cfg.layout.world_size:
        print(f"standin: MPI world {comm.size} != layout world {cfg.layout.world_size}", file=sys.stderr)
        return 3
    stop: dict = {"sig": 0}
    # Like the real worker, which imports torch before installing its handlers.
    time.sleep(float(os.environ.get("STANDIN_IMPORT_DELAY_S", "0")))

    def on_signal(signum, frame):  # a flag only; acted on at the step boundary
        stop["sig"] = signum

    signal.signal(signal.SIGUSR2, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    step_s = float(os.environ.get("STANDIN_STEP_S", "0.2"))
    ckpt_dir = run_dir / "checkpoints"
    start = _latest_step(ckpt_dir)
    if comm.rank == 0:
        _append(
            run_dir / "standin_starts.jsonl",
            {
                "job_id": os.environ.get("SLURM_JOB_ID"),
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                "start_step": start,
                "world": comm.size,
            },
        )
        print(f"standin: rank 0 of {comm.size}, starting at step {start}", flush=True)
    step = start
    while step < cfg.total_steps:
        time.sleep(step_s)
        step += 1
        if comm.rank == 0:
            _append(run_dir / "metrics.jsonl", {"step": step, "world": comm.size})
        stopping = comm.allreduce(1 if stop["sig"] else 0, op=MPI.MAX)
        every = cfg.checkpoint.every_steps
        if stopping or step == cfg.total_steps or (every and step % every == 0):
            if comm.rank == 0:
                d = ckpt_dir / f"step_{step:06d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / "state.json").write_text(json.dumps({"step": step}))
                (d / "COMMITTED").write_text("")
            comm.Barrier()
        if stopping:
            if comm.rank == 0:
                print(f"standin: stop signal, checkpointed step {step}, exiting for requeue", flush=True)
            return cfg.runtime.requeue_exit_code
    if comm.rank == 0:
        print(f"standin: finished at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
