"""`python -m hpc_rlhf.launch.slurm_cmds prepare|requeue|end RUN_DIR ...`: jobs/ppo.sbatch's steps, for copies of
the template made before they moved (now `hpc-rlhf job ...`, launch/cli.py; see launch/sbatch_cmds.py)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from hpc_rlhf.launch.sbatch_cmds import main

    sys.exit(main())
