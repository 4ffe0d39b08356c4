"""kill -9 of the whole multi-rank job at seeded-random instants, resumed each time: the final weights
are bit-identical to an uninterrupted run and every prompt is consumed exactly once per pass."""

from __future__ import annotations

import random

import pytest

from tests.conftest import FAULT_STEPS, kr

pytestmark = pytest.mark.mpi


def test_sigkill_at_random_instants_then_resume_is_bit_identical(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, train_args, random.Random(20261127), kills=3, log=str(tmp_path / "log"))
    killed = [e for e in events if e.get("killed")]
    assert len(killed) == 3, events  # three SIGKILLs while training was going on
    assert all(e["after_steps"] >= 1 for e in killed), events
    assert events[-1] == {"attempt": 3, "killed": False, "exit": 0}
    assert kr.check_run(run, FAULT_STEPS, reference) == []
