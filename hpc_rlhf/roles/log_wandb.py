"""Weights & Biases (logging.wandb.enabled; pip install 'hpc-rlhf[wandb]'): a sink of roles/metrics_log.py.

    sink = WandbSink(cfg, run_dir, run_id, config, identity)   # run_id: kept in RUN_DIR/tracking.json
    sink.log(step, {"ppo/policy_loss": 0.1, ...})
    sink.close()

The W&B run's id is drawn once per run directory (never from time or pid) and kept by the caller, so a
resumed or requeued run continues the same W&B run (`resume="allow"`). Offline (the default) everything
W&B writes, its cache, config and data folders included, stays in RUN_DIR/wandb: each attempt is an
`offline-run-*` folder of the same id, and `wandb sync RUN_DIR/wandb/offline-run-*` uploads them, in
order, as one run. The run file is flushed every second, so a crash of the train lead loses at most that
much. Steps a resumed run repeats (those after its checkpoint) are logged again with the same
step; W&B keeps the values it has (bit-exact resume: the same values but `time/*`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Any

from hpc_rlhf.config import Config
from hpc_rlhf.rundir import RunDir

# W&B's own folders, set for an offline run so that nothing is written outside RUN_DIR (W&B's defaults
# are under the home directory)
_OFFLINE_DIRS = {
    "WANDB_CACHE_DIR": "cache",
    "WANDB_CONFIG_DIR": "config",
    "WANDB_DATA_DIR": "data",
    "WANDB_ARTIFACT_DIR": "artifacts",
}


# W&B writes its run file every this many seconds (its default, 15 s, would lose that much of the metrics to a
# crash or SIGKILL of the train lead; the steps after the last checkpoint are logged again by the resume)
_FLUSH_S = 1.0


def new_run_id() -> str:
    """A fresh W&B run id (W&B's own form: 8 characters of [a-z0-9])."""
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))


class WandbSink:
    EVAL_STEP = "eval/step"  # the axis of the eval/* metrics (define_metric)
    eval_axis = False  # defined yet

    def __init__(self, cfg: Config, run_dir: str, run_id: str, config: dict, identity: dict[str, Any]):
        w = cfg.logging.wandb
        rd = RunDir(run_dir)
        tmp = tempfile.tempdir
        if w.mode == "offline":
            for var, sub in _OFFLINE_DIRS.items():
                os.environ[var] = os.path.join(rd.wandb, f".{sub}")
            os.makedirs(os.path.join(rd.wandb, ".tmp"), exist_ok=True)
            tempfile.tempdir = os.path.join(rd.wandb, ".tmp")  # W&B's import and start make temporary folders
        try:
            self.run = self._start(cfg, run_dir, run_id, {**config, "hpc_rlhf": identity})
        finally:
            tempfile.tempdir = tmp

    @staticmethod
    def _start(cfg: Config, run_dir: str, run_id: str, config: dict) -> Any:
        import wandb

        w = cfg.logging.wandb
        settings = wandb.Settings(
            console="off",
            disable_git=True,
            x_disable_stats=w.mode == "offline",
            x_transaction_log_flush_interval=_FLUSH_S,
        )
        run = wandb.init(
            project=w.project,
            entity=w.entity,
            name=w.name or os.path.basename(os.path.abspath(run_dir)),
            tags=list(w.tags),
            id=run_id,
            resume="allow",
            dir=run_dir,
            mode=w.mode,
            config=config,
            settings=settings,
        )
        run.config.update(config, allow_val_change=True)  # what a resume changed (resume-safe keys)
        return run

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step, commit=True)  # the row is complete: not held until the next step

    def log_eval(self, step: int, scalars: dict[str, float]) -> None:
        """eval/* of the policy after `step`, which reach the lead after later steps' rows: W&B takes no step it
        has passed, so they join the next row, plotted against their own axis `eval/step` (= step)."""
        if not self.eval_axis:
            self.run.define_metric(self.EVAL_STEP)
            self.run.define_metric("eval/*", step_metric=self.EVAL_STEP)
            self.eval_axis = True
        self.run.log({**scalars, self.EVAL_STEP: step}, commit=False)

    def close(self) -> None:
        self.run.finish()
