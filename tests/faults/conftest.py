"""Fixtures of the fault tests: tools/kill_resume.py's helpers, and an uninterrupted reference run."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.conftest import REPO, TINY, cli


def _load_tool():
    spec = importlib.util.spec_from_file_location("kill_resume", os.path.join(REPO, "tools", "kill_resume.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kr = _load_tool()

STEPS = 20  # a tiny step takes ~0.1 s: three kills (each <= 3 steps + 0.2 s in) end before step 20


@pytest.fixture(scope="session")
def train_args(tiny_rm) -> list[str]:
    """The faulted runs: 20 steps of the tiny config on 1+1+1 ranks, a checkpoint every 2 steps."""
    return [TINY, *tiny_rm["overrides"], f"total_steps={STEPS}", "checkpoint.every_steps=2"]


@pytest.fixture(scope="session")
def reference(tmp_path_factory, train_args, mpiexec) -> str:
    """SHA-256 of the final policy of the same run, uninterrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    cli("train", *train_args, f"run_dir={run}")
    return kr.final_sha(str(run))
