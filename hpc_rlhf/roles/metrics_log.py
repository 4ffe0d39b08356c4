"""The train lead's step metrics: RUN_DIR/metrics.jsonl, a progress bar, metric hooks, and a fan-out to
the sinks TensorBoard (roles/log_tensorboard.py), W&B (roles/log_wandb.py) and MLflow (roles/log_mlflow.py).

    log = MetricsLog(cfg, run_dir, start_step)   # cuts metrics.jsonl back to start_step; opens the sinks
    log.write(step, metrics)                      # one JSON line {"step", "time_unix", metrics...}; the sinks
    log.write_eval(step, metrics)                 # eval/* of the policy after `step` (roles/evaluator.py), once
    log.close()
    hooks = StepMetricHooks(cfg, tok)             # logging.step_metrics, loaded by name
    metrics.update(hooks(responses))              # {name: float} of every hook, in the listed order
    metrics.update(source_means(parts, names))    # score/reward/NAME: each reward source's step mean

Metric names carry their role: `gen/`, `score/`, `ppo/`, `time/` (see roles/trainer.py). The W&B and
MLflow runs a run logs to are named in RUN_DIR/tracking.json, written once (atomically) when a sink
first opens its run and read by every later attempt: a resumed or requeued run continues the same logged
run. Each gets the resolved config and `identity()`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpc_rlhf.config import Config, fingerprint, to_dict, to_yaml
from hpc_rlhf.plugins import load_callable
from hpc_rlhf.rollout.ledger import truncate_jsonl
from hpc_rlhf.rundir import RunDir, write_atomic


def identity(cfg: Config, run_dir: str) -> dict[str, Any]:
    """What names this run to a tracker: its run directory, config fingerprint, seed, algorithm, Slurm job."""
    return {
        "run_dir": os.path.abspath(run_dir),
        "config_fingerprint": fingerprint(cfg),
        "seed": cfg.seed,
        "algo": cfg.algo.name,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
    }


def load_tracking(run_dir: str) -> dict[str, Any]:
    """RUN_DIR/tracking.json: {"wandb": {"run_id"}, "mlflow": {"run_id", "tracking_uri"}}, {} before the first."""
    path = RunDir(run_dir).tracking
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _open_sinks(cfg: Config, run_dir: str) -> list[Any]:
    """The enabled sinks; a W&B or MLflow run id new to this run dir is stored before any metric is sent."""
    sinks: list[Any] = []
    if cfg.logging.tensorboard:
        from hpc_rlhf.roles.log_tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(run_dir))
    if not (cfg.logging.wandb.enabled or cfg.logging.mlflow.enabled):
        return sinks
    ids, config, ident = load_tracking(run_dir), to_dict(cfg), identity(cfg, run_dir)
    before = json.dumps(ids, sort_keys=True)
    if cfg.logging.wandb.enabled:
        from hpc_rlhf.roles.log_wandb import WandbSink, new_run_id

        ids.setdefault("wandb", {"run_id": new_run_id()})  # random, drawn once: unique among run dirs
        write_atomic(RunDir(run_dir).tracking, json.dumps(ids, indent=1, sort_keys=True).encode())
        sinks.append(WandbSink(cfg, run_dir, ids["wandb"]["run_id"], config, ident))
    if cfg.logging.mlflow.enabled:
        from hpc_rlhf.roles.log_mlflow import MLflowSink, tracking_uri

        sink = MLflowSink(cfg, run_dir, ids.get("mlflow", {}).get("run_id"), config, ident)
        sink.log_config_text(to_yaml(cfg))
        ids["mlflow"] = {"run_id": sink.run_id, "tracking_uri": tracking_uri(cfg, run_dir)}
        sinks.append(sink)
    if json.dumps(ids, sort_keys=True) != before:
        write_atomic(RunDir(run_dir).tracking, json.dumps(ids, indent=1, sort_keys=True).encode())
    return sinks


class MetricsLog:
    """RUN_DIR/metrics.jsonl (one line per step), a progress bar, the sinks (TensorBoard, W&B, MLflow)."""

    def __init__(self, cfg: Config, run_dir: str, start_step: int):
        self.path = RunDir(run_dir).metrics
        truncate_jsonl(self.path, start_step)
        self.eval_steps = _eval_steps(self.path)
        self.bar = None
        if cfg.logging.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.total_steps, initial=start_step, desc="ppo", unit="step", dynamic_ncols=True)
        self.sinks = _open_sinks(cfg, run_dir)

    def write(self, step: int, metrics: dict) -> None:
        line = {"step": step, "time_unix": time.time(), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{metrics.get('score/reward_mean', 0):.3f}", kl=f"{metrics.get('score/kl_mean', 0):.3f}"
            )
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for sink in self.sinks:
            sink.log(step, scalars)

    def write_eval(self, step: int, metrics: dict) -> None:
        """An evaluation's eval/* metrics, attributed to `step`: a line {"step", eval/...} of its own (readers
        merge it into the step's), and the sinks. A step whose eval line is already in the file (a resumed
        run that evaluates again) is not written twice."""
        if step in self.eval_steps:
            return
        self.eval_steps.add(step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for sink in self.sinks:  # TensorBoard takes any step order; W&B and MLflow have a log_eval of their own
            getattr(sink, "log_eval", sink.log)(step, {k: float(v) for k, v in metrics.items()})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for sink in self.sinks:
            sink.close()


def _eval_steps(path: str) -> set[int]:
    """Steps whose eval/* line metrics.jsonl holds already."""
    out: set[int] = set()
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if any(k.startswith("eval/") for k in row):
                    out.add(int(row["step"]))
    return out


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
