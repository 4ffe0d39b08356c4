"""RUN_DIR/metrics.jsonl read back: one dict per logged step, whatever the stage (RL, SFT, reward model).

    rows = read_metrics("runs/demo")     # [{"step": 0, "time_unix": ..., "ppo/policy_loss": ...}, ...]
    stage_of(rows)                       # "rl", "sft" or "rm", from the metric names
    series(rows, "score/kl_mean")        # ([steps], [values]) of one metric, steps without it left out

A run that is writing may leave a partial last line, and a resumed run cuts the file back to its checkpoint
before appending (so a step appears once); both are read as they are meant: a line that does not parse is
skipped, and when a step appears twice the later line wins. An evaluation's line ({"step", "eval/...": ...},
written when the evaluation ends) joins its step's row.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

from hpc_rlhf.rundir import RunDir

# the metric that names the stage of a run (its first prefix found wins); RL runs log `ppo/` for every algorithm
STAGE_PREFIXES = (("sft/", "sft"), ("rm/", "rm"), ("ppo/", "rl"), ("score/", "rl"))


def read_metrics(run_dir: str, tail_bytes: Optional[int] = None) -> list[dict]:
    """The parsed lines of RUN_DIR/metrics.jsonl in step order ([] when there is none yet).
    tail_bytes: read only the file's last bytes (the first, maybe cut, line is dropped)."""
    path = RunDir(run_dir).metrics
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        if tail_bytes is not None:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
        text = f.read().decode(errors="replace")
    lines = text.splitlines()
    if tail_bytes is not None and len(text.encode()) >= tail_bytes:
        lines = lines[1:]
    by_step: dict[int, dict] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partly written line
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            # an eval line (roles/evaluator.py) adds its eval/* to the step's row; a step's own line keeps them
            prev = by_step.get(row["step"], {})
            evals = {k: v for k, v in prev.items() if k.startswith(EVAL_PREFIX)}
            by_step[row["step"]] = {**prev, **row} if _is_eval_line(row) else {**row, **evals}
    return [by_step[s] for s in sorted(by_step)]


EVAL_PREFIX = "eval/"


def _is_eval_line(row: dict) -> bool:
    """A line of eval/* metrics only (MetricsLog.write_eval), which joins its step's row."""
    return all(k == "step" or k.startswith(EVAL_PREFIX) for k in row) and len(row) > 1


def stage_of(rows: list[dict]) -> Optional[str]:
    """'rl', 'sft' or 'rm' from the metric names of the rows (None when there are no rows)."""
    names = set().union(*rows) if rows else set()
    for prefix, stage in STAGE_PREFIXES:
        if any(n.startswith(prefix) for n in names):
            return stage
    return None


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(rows: list[dict], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of metric `name`, only the steps that logged it as a finite number."""
    pts = [(r["step"], float(r[name])) for r in rows if is_number(r.get(name))]
    return [s for s, _ in pts], [v for _, v in pts]


def step_seconds(rows: list[dict]) -> tuple[list[int], list[float]]:
    """Wall seconds of each step from consecutive lines' time_unix (a step right after a gap in the step
    numbers, a resume, is left out: its time includes the restart)."""
    steps, secs = [], []
    for a, b in zip(rows, rows[1:]):
        if b["step"] == a["step"] + 1 and is_number(a.get("time_unix")) and is_number(b.get("time_unix")):
            steps.append(b["step"])
            secs.append(float(b["time_unix"]) - float(a["time_unix"]))
    return steps, secs
