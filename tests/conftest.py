"""Shared fixtures: a tiny reward model trained once per session, and a CLI runner.

Components the default run needs (mpiexec, the Slurm dev cluster) must be present: in CI (`in_ci()`),
a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.yaml")


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
