"""hpc-rlhf: an HPC-native RLHF (PPO) trainer. See README.md."""

import os as _os

__version__ = "0.1.0"  # pyproject.toml's version (tests/launch/test_cli.py keeps them equal)

# No hub access at run time, and no per-load progress bars in rank logs.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
