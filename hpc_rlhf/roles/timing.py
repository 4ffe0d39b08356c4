"""Per-rank phase timings for the benchmarks: RUN_DIR/timing/ROLE_RANK.jsonl, one line per step.

    timer = PhaseTimer(run_dir, "generate", rank)     # a no-op unless HPC_RLHF_TIMING=1
    with timer.phase("compute/generate"): ...
    timer.add("wait/weights", seconds)
    timer.flush(step)                                  # {"step", "role", "rank", "t0", "t1", phases...}

Phase names are `compute/...`, `io/...` (shard, weights and checkpoint files) or `wait/...`
(blocked on another rank), so tools/bench can split each role's wall time into the three. Off by
default: a normal run writes nothing and pays one attribute test per phase.

    spans = Spans(timer)                  # a probe for code that names its sections, not their time
    with spans("optimizer/policy"): ...   # kept: spans.seconds["optimizer/policy"] == [s, ...]
    with spans("wait/allreduce"): ...     # wait/* phases go straight to the timer
"""

from __future__ import annotations

import itertools
import json
import os
import time
from contextlib import contextmanager

from hpc_rlhf.rundir import RunDir

ENV = "HPC_RLHF_TIMING"


class PhaseTimer:
    def __init__(self, run_dir: str, role: str, rank: int):
        self.on = os.environ.get(ENV) == "1"
        self.role, self.rank = role, rank
        self.path = RunDir(run_dir).timing(role, rank)
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


class Spans:
    """Times the named sections of code that holds no clock (roles/trainer_step.py's `probe`):
    `wait/...` sections are added to the phase timer as they end, the others are kept, one entry
    per time the section ran, in `seconds[name]`. Sections may run on two threads at once."""

    def __init__(self, timer: PhaseTimer):
        self.timer = timer
        self.seconds: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            if name.startswith("wait/"):
                self.timer.add(name, dt)
            else:
                self.seconds.setdefault(name, []).append(dt)

    def paired_max(self, a: str, b: str) -> float:
        """Sum over the i-th runs of sections a and b (run side by side) of the longer of the two; a section
        that did not run (a critic-free step has no value optimizer) counts 0."""
        total = 0.0
        for x, y in itertools.zip_longest(self.seconds.get(a, []), self.seconds.get(b, []), fillvalue=0.0):
            total += max(x, y)
        return total
