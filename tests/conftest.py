"""Shared fixtures: a tiny reward model trained once per session, a CLI runner, and the fault tests'
runs (tools/kill_resume.py's helpers as `kr`, the faulted runs' arguments, an uninterrupted reference).

Components the default run needs (mpiexec, the Slurm dev cluster) must be present: in CI (`in_ci()`),
a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.yaml")
FAULT_STEPS = 20  # a tiny step takes ~0.1 s: three kills (each <= 3 steps + 0.2 s in) end before step 20


def in_ci() -> bool:
    """True when the tests run in CI: the CI variable is set to anything but "", "0", "false" or "no".

    The one place that decides it; every "fail in CI, skip locally" check asks here."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(ok: bool, what: str) -> None:
    """Skip locally, fail in CI, when a component is missing."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{what} is missing in CI (.ci/run must install it)")
    pytest.skip(f"{what} is missing")


def cli(*args: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m hpc_rlhf.launch.cli ARGS` and return the completed process (text output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hpc-rlhf {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def mpiexec() -> str:
    exe = shutil.which("mpiexec")
    need(exe is not None, "mpiexec (pip install mpich)")
    return exe


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory) -> dict:
    """A reward model + tokenizer trained on the tiny config's demo pairs; overrides that use them."""
    d = tmp_path_factory.mktemp("tiny_rm")
    cli("train-rm", TINY, f"run_dir={d}")
    return {
        "dir": str(d),
        "overrides": [f"model.reward_path={d}/reward_model", f"model.tokenizer_path={d}/tokenizer"],
    }


def _load_kill_resume():
    spec = importlib.util.spec_from_file_location("kill_resume", os.path.join(REPO, "tools", "kill_resume.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kr = _load_kill_resume()  # tools/kill_resume.py: start, SIGKILL and check runs (stdlib only, cheap to load)


@pytest.fixture(scope="session")
def train_args(tiny_rm) -> list[str]:
    """The fault tests' runs: 20 steps of the tiny config on 1+1+1 ranks, a checkpoint every 2 steps."""
    return [TINY, *tiny_rm["overrides"], f"total_steps={FAULT_STEPS}", "checkpoint.every_steps=2"]


@pytest.fixture(scope="session")
def reference(tmp_path_factory, train_args, mpiexec) -> str:
    """SHA-256 of the final policy of the fault tests' run, uninterrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    cli("train", *train_args, f"run_dir={run}")
    return kr.final_sha(str(run))
