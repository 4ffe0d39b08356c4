"""One MPI rank of a run: `python -m hpc_rlhf.launch.worker RUN_DIR` (what mpiexec/srun start).

Reads RUN_DIR/config.yaml, finds its role from the world size and the layout, resumes from the
latest checkpoint, and runs its role loop. Exit status: 0 = run finished; runtime.requeue_exit_code
(75) = stopped by a signal after a checkpoint, requeue me; 1 = this rank failed: it prints its rank,
role and error, then aborts the whole MPI world so no rank is left waiting.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch

from hpc_rlhf.config import Config, load_config
from hpc_rlhf.errors import UserError


def _threads(cfg: Config, comm) -> int:
    if cfg.runtime.torch_threads > 0:
        return cfg.runtime.torch_threads
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    return max(1, len(os.sched_getaffinity(0)) // local)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = argv[0]
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    cfg.run_dir = run_dir
    from mpi4py import MPI

    from hpc_rlhf.dist.control import Control
    from hpc_rlhf.dist.topology import Topology
    from hpc_rlhf.launch.signals import StopFlag
    from hpc_rlhf.models.build import pick_device

    comm = MPI.COMM_WORLD
    rank, role = comm.Get_rank(), "?"
    ntasks = os.environ.get("SLURM_NTASKS") if os.environ.get("SLURM_STEP_ID") is not None else None
    if ntasks is not None and int(ntasks) != comm.Get_size():
        print(
            f"error: MPI world size {comm.Get_size()} != SLURM_NTASKS {ntasks}: srun's --mpi plugin does not "
            f"match this MPI (use --mpi=pmi2 with MPICH)",
            file=sys.stderr,
        )
        return 2
    stop = StopFlag().install()
    try:
        topo = Topology.build(comm.Get_size(), cfg.layout)
        role = topo.role(rank)
        torch.set_num_threads(_threads(cfg, comm))
        device = pick_device(cfg.runtime.device)
        if topo.single:
            from hpc_rlhf.launch.single import run_single

            verdict = run_single(cfg, run_dir, device, stop)
        else:
            train_comm = comm.Split(1 if topo.is_trainer(rank) else 0, rank)
            ctl = Control(comm, topo, cfg.runtime.wait_timeout_s, stop)
            if role == "generate":
                from hpc_rlhf.roles.generator import run_generator

                verdict = run_generator(cfg, run_dir, topo, ctl, device, _start_step(run_dir))
            elif role == "score":
                from hpc_rlhf.roles.scorer import run_scorer

                verdict = run_scorer(cfg, run_dir, topo, ctl, device, _start_step(run_dir))
            else:
                from hpc_rlhf.roles.trainer_loop import run_trainer

                verdict = run_trainer(cfg, run_dir, topo, ctl, device, train_comm, stop)
    except BaseException as e:  # noqa: BLE001 - any failure must take the whole world down
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: rank {rank} ({role}) failed: {type(e).__name__}: {msg}", file=sys.stderr, flush=True)
        if not isinstance(e, UserError):
            traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        comm.Abort(1)
        return 1
    return 0 if verdict == "done" else cfg.runtime.requeue_exit_code


def _start_step(run_dir: str) -> int:
    """Where generators and scorers start: the step of the latest valid checkpoint (0 if none)."""
    from hpc_rlhf.checkpoint.store import find_latest

    info = find_latest(run_dir)
    return info.step if info else 0


if __name__ == "__main__":
    sys.exit(main())
