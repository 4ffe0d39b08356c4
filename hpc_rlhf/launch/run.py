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
        print(f"error: the run failed (exit {code}); see the rank errors above", file=sys.stderr)
    return code
