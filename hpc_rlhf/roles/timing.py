"""Per-rank phase timings for the benchmarks: RUN_DIR/timing/ROLE_RANK.jsonl, one line per step.

    timer = PhaseTimer(run_dir, "generate", rank)     # a no-op unless HPC_RLHF_TIMING=1
    with timer.phase("compute/generate"): ...
    timer.add("wait/weights", seconds)
    timer.flush(step)                                  # {"step", "role", "rank", "t0", "t1", phases...}

Phase names are `compute/...`, `io/...` (shard, weights and checkpoint files) or `wait/...`
(blocked on another rank), so tools/bench can split each role's wall time into the three. Off by
default: a normal run writes nothing and pays one attribute test per phase.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager

ENV = "HPC_RLHF_TIMING"


class PhaseTimer:
    def __init__(self, run_dir: str, role: str, rank: int):
        self.on = os.environ.get(ENV) == "1"
        self.role, self.rank = role, rank
        self.path = os.path.join(run_dir, "timing", f"{role}_{rank}.jsonl")
        self.phases: dict[str, float] = {}
        self.t0: float | None = None
        if self.on:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def add(self, phase: str, seconds: float) -> None:
        if self.on:
            if self.t0 is None:
                self.t0 = time.time() - seconds
            self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str):
        if not self.on:
            yield
            return
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def flush(self, step: int) -> None:
        """Write this step's phases (and the wall window they fell in), then start afresh."""
        if not self.on:
            return
        line = {"step": step, "role": self.role, "rank": self.rank, "t0": self.t0, "t1": time.time(), **self.phases}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.phases, self.t0 = {}, None
