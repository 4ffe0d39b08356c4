"""`python -m hpc_rlhf.launch.sbatch_cmds hold|prepare|requeue|end RUN_DIR ...`: jobs/ppo.sbatch's steps.

The same commands as `hpc-rlhf job ...` (defined in launch/cli.py, done by launch/sbatch_steps.py); this name
stays because copies of the sbatch template call it.
"""

from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    from hpc_rlhf.launch.cli import main as cli_main

    return cli_main(["job", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
