"""Real MPI runs with generate.engine=vllm (the CPU engine, in its venv): the GRPO demo on 1+1+1 and
2+1+1 against the native engine's gain, with a full policy and with LoRA adapters, and SIGKILL +
resume of a PPO run (tools/kill_resume.py).

One run per scenario (an engine start costs ~30 s per generation rank); each is reused by the
assertions that need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpc_rlhf.rollout.shard import read_shard
from tests.conftest import REPO, eval_series, tiny_eval

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

GRPO = os.path.join(REPO, "configs", "grpo.yaml")
GAIN_SHARE = 0.8  # the vLLM run's gold-reward gain must reach this share of the native run's


def _demo(python: str, run_dir: str, *overrides: str) -> dict:
    args = [python, "-m", "hpc_rlhf.launch.cli", "demo", "--config", GRPO, f"run_dir={run_dir}"]
    args += ["logging.progress=false", "generate.shards_per_step=2", *overrides]
    env = {**os.environ, "PYTHONPATH": REPO}
    p = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert p.returncode == 0, f"{' '.join(args)}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return json.load(open(os.path.join(run_dir, "demo_report.json")))


# The policy each scenario trains: all its weights, or LoRA adapters (served to vLLM merged)
POLICIES = {"full": [], "lora": ["model.lora.r=8", "model.lora.alpha=16", "ppo.lr=1e-3"]}
# The runs of each policy (an engine start and a 40-step demo each: CI time). The layouts are compared with a
# full policy; LoRA's merged weights are checked for learning here, per version by the probe
# (test_vllm_engine.py) and through a kill and resume (below).
SCENARIOS = {
    "native": (None, []),
    "vllm_111": ("vllm", ["generate.engine=vllm"]),
    "vllm_211": ("vllm", ["generate.engine=vllm", "layout.generate=2"]),
    "vllm_single": ("vllm", ["generate.engine=vllm", "runtime.launcher=none"]),  # versions as tensors
}
RUNS = {"full": ["native", "vllm_111", "vllm_211", "vllm_single"], "lora": ["native", "vllm_111"]}
GOLD = "{name: gold, kind: function, function: 'hpc_rlhf.demo.task:gold_reward'}"
# Evaluation during training with the run's engine: 4 evaluations of 8 prompts x 4 samples (the full-policy runs)
EVAL = [
    "eval.every=10",
    "eval.num_prompts=8",
    "eval.samples_per_prompt=4",
    "eval.temperature=1.0",
    "eval.max_new_tokens=16",
]
EVAL += [f"eval.sources=[{GOLD}]", "eval.pass_source=gold"]


def _runs(policy: str, python: str, base) -> dict[str, tuple[str, dict]]:
    """{scenario: (run dir, demo report)} of the runs of `policy` (RUNS)."""
    runs = {}
    for name in RUNS[policy]:
        engine, over = SCENARIOS[name]
        d = str(base / name)
        evals = EVAL if policy == "full" else []
        runs[name] = (d, _demo(python if engine else sys.executable, d, *POLICIES[policy], *over, *evals))
    return runs


@pytest.fixture(scope="module")
def full_runs(vllm_py, mpiexec, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    return _runs("full", vllm_py, tmp_path_factory.mktemp("vllm_grpo_full"))


@pytest.fixture(scope="module")
def lora_runs(vllm_py, mpiexec, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    return _runs("lora", vllm_py, tmp_path_factory.mktemp("vllm_grpo_lora"))


def _gain(rep: dict) -> float:
    return rep["gold_reward_final"] - rep["gold_reward_initial"]


@pytest.mark.parametrize("policy,name", [("full", "vllm_111"), ("full", "vllm_211"), ("lora", "vllm_111")])
def test_the_grpo_demo_learns_with_vllm_as_well_as_native(request, policy, name):
    runs = request.getfixturevalue(f"{policy}_runs")
    native, rep = runs["native"][1], runs[name][1]
    assert rep["steps"] == 40 and rep["gold_reward_initial"] == native["gold_reward_initial"]
    assert _gain(rep) >= GAIN_SHARE * _gain(native), (rep, native)


def _tokens(run_dir: str) -> dict[str, list]:
    out = {}
    for step in sorted(os.listdir(os.path.join(run_dir, "rollouts"))):
        d = os.path.join(run_dir, "rollouts", step)
        for f in sorted(x for x in os.listdir(d) if x.startswith("gen_")):
            data, _ = read_shard(os.path.join(d, f))
            out[f"{step}/{f}"] = [data["response_tokens"], data["gen_logprobs"]]
    return out


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("other", ["vllm_211", "vllm_single"])
def test_vllm_samples_the_same_tokens_on_every_layout(full_runs, other):
    """2+1+1 (other batches per engine) and the single-rank loop (versions handed over as tensors, no
    files) against 1+1+1: the same tokens and log-probs in every shard, the same evaluations (sampled by
    the engine), the same final policy."""
    runs = full_runs
    a, b = _tokens(runs["vllm_111"][0]), _tokens(runs[other][0])
    assert a.keys() == b.keys() and len(a) == 80
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]), f"{k}: other tokens on {other}"
        assert np.array_equal(a[k][1], b[k][1]), f"{k}: other log-probs on {other}"
    ea, eb = eval_series(runs["vllm_111"][0]), eval_series(runs[other][0])
    assert sorted(ea) == [9, 19, 29, 39] and "eval/pass_at_4" in ea[39], ea  # evaluated with vLLM, every 10
    assert ea == eb, f"other eval numbers on {other}"
    policy = os.path.join("final", "policy", "model.safetensors")
    assert _sha(os.path.join(runs["vllm_111"][0], policy)) == _sha(os.path.join(runs[other][0], policy))


@pytest.mark.parametrize("policy", [[], ["model.lora.r=4", "model.lora.alpha=8"]], ids=["full", "lora"])
def test_a_killed_and_resumed_vllm_ppo_run_ends_as_the_uninterrupted_one(vllm_py, mpiexec, tmp_path, policy):
    """tools/kill_resume.py in the vLLM venv: a PPO run (configs/tiny.yaml, head size 32 for the CPU
    engine; with LoRA, the adapters served merged) SIGKILLed and resumed ends with the reference run's
    final-policy SHA-256, every step and prompt in the ledger once, a clean archive and valid checkpoints."""
    args = [vllm_py, os.path.join(REPO, "tools", "kill_resume.py"), "--cycles", "1", "--kills", "1", "--seed", "1"]
    args += ["--work", str(tmp_path), "--set", "generate.engine=vllm", "model.arch.hidden_size=64", *policy]
    args += tiny_eval(4, rm=True)  # the resumed run's eval series must be the reference's (kill_resume.check_run)
    p = subprocess.run(
        args, capture_output=True, text=True, timeout=1500, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}
    )
    assert p.returncode == 0 and "1/1 cycles ended bit-identical" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
