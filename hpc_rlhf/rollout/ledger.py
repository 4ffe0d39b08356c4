"""The step ledger, RUN_DIR/ledger.jsonl: one line per trained step naming the rollouts it consumed.

    ledger = StepLedger(run_dir)
    ledger.restore(saved)                    # on resume: the checkpoint's copy replaces the file
    ledger.truncate(start_step)              # drop steps >= start_step and a torn last line
    ledger.append(step, ledger_entry(version, paths, prompt_index, sample_index))
    saved = ledger.read()                    # bytes, for the next checkpoint's copy

A line: {"step", "version" (the policy version that sampled the step's rollouts), "shards" (file
names, shard order), "prompt_index", "sample_index" (one per sample, batch order), and with
algo.dynamic_sampling "refill_rounds" (the refill rounds the step drew, rollout/refill.py)}. Only the train
lead writes it. `truncate_jsonl` also cuts RUN_DIR/metrics.jsonl back to a resumed step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Optional

from hpc_rlhf.rundir import RunDir, write_atomic


def ledger_entry(version: int, paths: Sequence[str], prompt_index, sample_index, rounds: Optional[int] = None) -> dict:
    """The ledger fields of a step (without "step"): index arrays are numpy int arrays, one per sample;
    rounds: its refill rounds (None: dynamic sampling off, no key)."""
    extra = {} if rounds is None else {"refill_rounds": rounds}
    return {
        "version": version,
        "shards": [os.path.basename(p) for p in paths],
        "prompt_index": prompt_index.tolist(),
        "sample_index": sample_index.tolist(),
        **extra,
    }


def truncate_jsonl(path: str, before_step: int) -> None:
    """Drop lines of steps >= before_step (left by an attempt that died after its last checkpoint),
    and a torn last line (an attempt killed in the middle of an append)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        raw = f.read()
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    keep = []
    for ln in lines:
        try:
            step = json.loads(ln)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if step < before_step:
            keep.append(ln + b"\n")
    if len(keep) != len(lines) or (raw and not raw.endswith(b"\n")):
        write_atomic(path, b"".join(keep))


class StepLedger:
    """RUN_DIR/ledger.jsonl of the train lead."""

    def __init__(self, run_dir: str):
        self.path = RunDir(run_dir).ledger

    def restore(self, saved: bytes) -> None:
        """Replace the file with a checkpoint's copy (atomically)."""
        write_atomic(self.path, saved)

    def truncate(self, start_step: int) -> None:
        truncate_jsonl(self.path, start_step)

    def append(self, step: int, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **entry}) + "\n")

    def read(self) -> bytes:
        """The whole file (empty when no step was recorded yet)."""
        if not os.path.exists(self.path):
            return b""
        with open(self.path, "rb") as f:
            return f.read()
