"""Run a prepared run on this machine and say how it ended.

    cfg, run_dir = prepare_run(cfg)     # hpc_rlhf.launch.prepare: checks, tokenizer, RUN_DIR/config.yaml
    code = run_local(cfg, run_dir)      # mpiexec (runtime.launcher=local: launch/local.py) or this process (none)

Exit status 0: finished; runtime.requeue_exit_code (75): stopped after a checkpoint (the message says how to
continue); anything else: failed (the ranks have printed why).
"""

from __future__ import annotations

import sys

from hpc_rlhf.config import Config


def run_local(cfg: Config, run_dir: str) -> int:
    """Run the prepared run on this machine (mpiexec, or in this process for runtime.launcher=none);
    say on stderr how to continue or where to look when it did not finish. Returns its exit status."""
    if cfg.runtime.launcher == "local":
        from hpc_rlhf.launch.local import launch_local

        code = launch_local(cfg, run_dir)
    else:
        from hpc_rlhf.launch.worker import main as worker_main

        code = worker_main([run_dir])
    if code == cfg.runtime.requeue_exit_code:
        print(f"stopped after a checkpoint; continue with: hpc-rlhf resume {run_dir}", file=sys.stderr)
    elif code != 0:
        from hpc_rlhf.cluster.ranks import failure_lines

        named = failure_lines(run_dir)  # a rank's own line can be lost when MPI aborts the world: say it here too
        said = "; ".join(named) if named else "see the rank errors above"
        print(f"error: the run failed (exit {code}): {said}", file=sys.stderr)
    return code


def check_startable(cfg: Config, local: bool = True) -> None:
    """One-line UserErrors for what would fail only after files are written: a run_dir that is a file, an
    algorithm the registry lacks, and (local=True, runtime.launcher=local) an mpiexec that is not there.
    Called before the lease is taken."""
    import os
    import shutil

    from hpc_rlhf.errors import UserError

    if os.path.exists(cfg.run_dir) and not os.path.isdir(cfg.run_dir):
        raise UserError(
            f"run_dir '{cfg.run_dir}' is a file, not a folder; give run_dir=PATH of a folder (made if missing)"
        )
    if cfg.stage == "rl":  # a misspelt algo.name or KL term: one line now, not when the train ranks start
        from hpc_rlhf.roles.trainer_algo import choose_algorithm

        choose_algorithm(cfg)
    if local and cfg.runtime.launcher == "local" and shutil.which(cfg.runtime.mpiexec) is None:
        raise UserError(
            f"runtime.mpiexec '{cfg.runtime.mpiexec}' not found on PATH; `pip install mpich` or point it at your site MPI"
        )
