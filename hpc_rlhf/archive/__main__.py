"""python -m hpc_rlhf.archive {summary,show,export,plot,verify} RUN_DIR ... (same as `hpc-rlhf archive ...`)."""

import sys

from hpc_rlhf.archive.cli import main

if __name__ == "__main__":
    sys.exit(main())
