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
TINY_TASK = "{name: demo, num_prompts: 64, vocab_words: 32, prompt_len_min: 3, prompt_len_max: 6}"  # configs/tiny.yaml


def tiny_eval(every: int, shards: int = 2, rm: bool = False) -> list[str]:
    """Overrides that turn evaluation on for the tiny config: 6 of its prompts, 4 samples each at
    temperature 1, the demo's gold reward (a response with gold words passes), every `every` versions;
    rm: the run's reward model as a second eval source (weight 0.5)."""
    gold = "{name: gold, kind: function, function: 'hpc_rlhf.demo.task:gold_reward'}"
    if rm:
        gold += ", {name: rm, kind: model, weight: 0.5}"
    return [
        f"eval.every={every}",
        f"eval.shards={shards}",
        "eval.num_prompts=6",
        "eval.samples_per_prompt=4",
        "eval.temperature=1.0",
        "eval.max_new_tokens=8",
        f"eval.task={TINY_TASK}",
        f"eval.sources=[{gold}]",
        "eval.pass_source=gold",
    ]


def eval_series(run_dir: str) -> dict[int, dict]:
    """step -> its eval/* metrics, from RUN_DIR/metrics.jsonl; a step logged twice fails (no duplicates)."""
    import json

    out: dict[int, dict] = {}
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        row = json.loads(line)
        ev = {k: v for k, v in row.items() if k.startswith("eval/")}
        if ev:
            assert row["step"] not in out, f"{run_dir}: eval of step {row['step']} logged twice"
            out[row["step"]] = ev
    return out


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
