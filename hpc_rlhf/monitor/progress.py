"""Where a run stands, from its run directory alone: the lines `hpc-rlhf status RUN_DIR` prints for any run.

    p = run_progress("runs/demo")
    p.done, p.total, p.steps_per_hour, p.eta_s    # steps logged, steps of the run, rate, seconds left
    p.last                                        # {"reward": ..., "kl": ..., "entropy": ..., "length": ...}
    print("\\n".join(progress_lines(p)))

The rate is the median over the last RATE_WINDOW steps' wall times (metrics.jsonl's time_unix), so a pause
or a restart does not distort it; the ETA is the steps left at that rate. `total` is `total_steps` of
config.yaml for an RL run and the step count the stage logs (`sft/steps_total`, `rm/steps_total`) for SFT and
reward-model runs.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

from hpc_rlhf.checkpoint.store import list_checkpoints
from hpc_rlhf.monitor.metrics import EVAL_PREFIX, is_number, read_metrics, stage_of, step_seconds
from hpc_rlhf.rundir import RunDir

RATE_WINDOW = 20
TAIL_BYTES = 1 << 20  # status reads the last MiB of metrics.jsonl: enough for RATE_WINDOW steps of any run

# what `status` shows of the last logged step: label -> the metric names to take it from, first found
LAST = {
    "rl": {
        "reward": ("score/total_reward_mean", "score/reward_mean"),
        "kl": ("score/kl_mean",),
        "entropy": ("gen/entropy_estimate",),
        "length": ("gen/response_len_mean",),
    },
    "sft": {"loss": ("sft/loss",), "grad_norm": ("sft/grad_norm",)},
    "rm": {"loss": ("rm/loss",), "grad_norm": ("rm/grad_norm",)},
}


@dataclass
class Progress:
    run_dir: str
    stage: Optional[str] = None
    """'rl', 'sft' or 'rm' (None before the first logged step)."""
    done: int = 0
    """Steps logged (the last logged step + 1)."""
    total: Optional[int] = None
    steps_per_hour: Optional[float] = None
    eta_s: Optional[float] = None
    last: dict[str, float] = field(default_factory=dict)
    last_logged_unix: Optional[float] = None
    checkpoint: Optional[str] = None
    """The newest committed checkpoint folder's name, e.g. 'step_000010'."""
    eval_step: Optional[int] = None
    """The last step with eval/* metrics (eval.every), None when none is logged."""
    eval: dict[str, float] = field(default_factory=dict)
    """That step's eval/* metrics, without the prefix."""

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total


def _config(run_dir: str):
    from hpc_rlhf.config import load_config

    try:
        return load_config(RunDir(run_dir).config)
    except Exception:  # no config yet, or one this version cannot read: stage and total are then unknown
        return None


def run_progress(run_dir: str) -> Progress:
    """Progress of the run at `run_dir` (a run dir without metrics yet gives done=0 and no rate)."""
    rows = read_metrics(run_dir, tail_bytes=TAIL_BYTES)
    cfg = _config(run_dir) if os.path.exists(RunDir(run_dir).config) else None
    stage = cfg.stage if cfg is not None else stage_of(rows)
    p = Progress(run_dir=run_dir, stage=stage)
    if stage == "rl":
        p.total = cfg.total_steps if cfg is not None else None
    elif rows and is_number(rows[-1].get(f"{stage}/steps_total")):
        p.total = int(rows[-1][f"{stage}/steps_total"])  # sft, rm: the stage computes its steps from the data
    if rows:
        p.done = rows[-1]["step"] + 1
        p.last_logged_unix = rows[-1].get("time_unix")
        for label, names in LAST.get(stage or "", {}).items():
            v = next((rows[-1][n] for n in names if is_number(rows[-1].get(n))), None)
            if v is not None:
                p.last[label] = float(v)
    evals = [r for r in rows if any(k.startswith(EVAL_PREFIX) for k in r)]
    if evals:
        p.eval_step = evals[-1]["step"]
        p.eval = {k[len(EVAL_PREFIX) :]: float(v) for k, v in evals[-1].items() if k.startswith(EVAL_PREFIX)}
    secs = step_seconds(rows)[1][-RATE_WINDOW:]
    if secs and statistics.median(secs) > 0:
        per_step = statistics.median(secs)
        p.steps_per_hour = 3600.0 / per_step
        if p.total is not None:
            p.eta_s = max(0, p.total - p.done) * per_step
    done = [c for c in list_checkpoints(run_dir, check=False) if c.valid]
    p.checkpoint = os.path.basename(done[-1].path) if done else None
    return p


def _duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def progress_lines(p: Progress, now: Optional[float] = None) -> list[str]:
    """The progress part of `status`: step, rate and ETA, the last metrics, the checkpoint."""
    now = time.time() if now is None else now
    total = "?" if p.total is None else str(p.total)
    step = f"step:       {p.done} / {total}{' (' + p.stage + ')' if p.stage else ''}"
    if p.finished:
        step += ", finished"
    elif p.steps_per_hour is not None:
        eta = f", ETA {_duration(p.eta_s)}" if p.eta_s is not None else ""
        step += f", {p.steps_per_hour:.0f} steps/hour{eta}"
    if p.last_logged_unix is not None:
        step += f"; last step logged {_duration(max(0.0, now - p.last_logged_unix))} ago"
    lines = [step]
    if p.last:
        lines.append("last:       " + ", ".join(f"{k} {v:.4g}" for k, v in p.last.items()))
    if p.eval:
        lines.append(f"eval:       step {p.eval_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in p.eval.items()))
    lines.append(f"checkpoint: {p.checkpoint or '-'}")
    return lines
