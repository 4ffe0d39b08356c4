"""The progress bar of the supervised stages (`hpc-rlhf sft`, `hpc-rlhf train-rm`): a tqdm bar on rank 0.

    bar = stage_bar(cfg, lead=run.lead, total=total, start=start, desc="sft")
    bar.step({"sft/loss": 0.31})      # after each step: advance, show the loss; closed after the last step

Shown only on the stage's rank 0, only when `logging.progress` is on, and only on a terminal (stderr is a
TTY) or when asked with HPC_RLHF_PROGRESS=1 (the ranks of an mpiexec job write to pipes, so the local
launcher asks for it when its own stderr is a terminal). Anywhere else, in a Slurm log for instance, it is a
no-op: the run writes the same lines to metrics.jsonl either way.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PROGRESS_ENV = "HPC_RLHF_PROGRESS"


class _NoBar:
    def step(self, metrics: dict) -> None:
        pass


class _Bar:
    def __init__(self, total: int, start: int, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)

    def step(self, metrics: dict) -> None:
        shown = {k.split("/", 1)[-1]: f"{v:.4g}" for k, v in metrics.items() if k.endswith("/loss")}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)
        if self.bar.n >= self.bar.total:
            self.bar.close()


def wanted(cfg: Any, lead: bool) -> bool:
    """A bar for this rank: rank 0, logging.progress, and a terminal or HPC_RLHF_PROGRESS=1."""
    asked = os.environ.get(PROGRESS_ENV, "").strip() == "1"
    return lead and cfg.logging.progress and (asked or sys.stderr.isatty())


def stage_bar(cfg: Any, lead: bool, total: int, start: int, desc: str) -> Any:
    """A bar over the steps start..total (see the module docstring), or one that shows nothing."""
    return _Bar(total, start, desc) if wanted(cfg, lead) else _NoBar()
