"""The train lead's step metrics: RUN_DIR/metrics.jsonl, a progress bar, TensorBoard, metric hooks.

    log = MetricsLog(cfg, run_dir, start_step)   # cuts metrics.jsonl back to start_step
    log.write(step, metrics)                      # one JSON line {"step", "time_unix", metrics...}
    log.close()
    hooks = StepMetricHooks(cfg, tok)             # logging.step_metrics, loaded by name
    metrics.update(hooks(responses))              # {name: float} of every hook, in the listed order
    metrics.update(source_means(parts, names))    # score/reward/NAME: each reward source's step mean

Metric names carry their role: `gen/`, `score/`, `ppo/`, `time/` (see roles/trainer.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.plugins import load_callable
from hpc_rlhf.rollout.ledger import truncate_jsonl
from hpc_rlhf.rundir import RunDir


class MetricsLog:
    """RUN_DIR/metrics.jsonl (one line per step), a progress bar, optional TensorBoard."""

    def __init__(self, cfg: Config, run_dir: str, start_step: int):
        self.path = RunDir(run_dir).metrics
        truncate_jsonl(self.path, start_step)
        self.bar = None
        if cfg.logging.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.total_steps, initial=start_step, desc="ppo", unit="step", dynamic_ncols=True)
        self.tb = None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(RunDir(run_dir).tensorboard)

    def write(self, step: int, metrics: dict) -> None:
        line = {"step": step, "time_unix": time.time(), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{metrics.get('score/reward_mean', 0):.3f}", kl=f"{metrics.get('score/kl_mean', 0):.3f}"
            )
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def source_means(parts: Sequence[dict], names: Sequence[str]) -> dict[str, float]:
    """`score/reward/NAME`: the mean over a step's samples of each reward source's value (unweighted;
    `score/reward_mean` is their weighted sum). `parts`: the step's scored shards' fields, each with a
    (N, S) `reward_sources`; `names`: the S sources in column order (reward.sources)."""
    values = np.concatenate([np.asarray(p["reward_sources"], dtype=np.float64) for p in parts])
    if values.shape[1] != len(names):
        raise ValueError(f"reward_sources has {values.shape[1]} columns for the sources {list(names)}")
    return {f"score/reward/{n}": float(values[:, j].mean()) for j, n in enumerate(names)}


class StepMetricHooks:
    """The functions of `logging.step_metrics`, called by the train lead after each step with the
    step's responses (token id arrays, batch order), the tokenizer and the config."""

    KEY = "logging.step_metrics"

    def __init__(self, cfg: Config, tok: Any):
        self.cfg, self.tok = cfg, tok
        self.fns = [(spec, load_callable(spec, self.KEY)) for spec in cfg.logging.step_metrics]

    def __call__(self, responses: Sequence[np.ndarray]) -> dict[str, float]:
        out: dict[str, float] = {}
        for spec, fn in self.fns:
            got = fn(list(responses), self.tok, self.cfg)
            if not isinstance(got, dict):
                raise TypeError(f"{self.KEY} '{spec}' returned {type(got).__name__}, not a dict of metrics")
            out.update({str(k): float(v) for k, v in got.items()})
        return out
