"""kill -9 of the whole multi-rank job at seeded-random instants, resumed each time: the final weights
are bit-identical to an uninterrupted run and every prompt is consumed exactly once per pass; for PPO, for
GRPO (no value model), for GRPO with dynamic sampling (refill rounds), for PPO with LoRA adapters (checkpoints hold the adapters only) and for two
FSDP-sharded trainers."""

from __future__ import annotations

import glob
import json
import os
import random

import pytest
from safetensors.torch import load_file

from tests.conftest import FAULT_STEPS, cli, eval_series, kr, tiny_eval

pytestmark = pytest.mark.mpi


def test_sigkill_at_random_instants_then_resume_is_bit_identical(tmp_path, train_args, reference):
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, train_args, random.Random(20261127), kills=3, log=str(tmp_path / "log"))
    killed = [e for e in events if e.get("killed")]
    assert len(killed) == 3, events  # three SIGKILLs while training was going on
    assert all(e["after_steps"] >= 1 for e in killed), events
    assert events[-1] == {"attempt": 3, "killed": False, "exit": 0}
    assert kr.check_run(run, FAULT_STEPS, reference) == []


GRPO = ["algo.name=grpo", "algo.kl_loss=k3", "algo.drop_uniform_groups=true"]


@pytest.fixture(scope="module", params=["demo", "parquet-chat"])
def grpo_case(request, tmp_path_factory, train_args, mpiexec) -> tuple[list[str], str, str]:
    """The GRPO fault run's arguments, the SHA-256 of its final policy uninterrupted, and that run's dir;
    `demo` evaluates every 4 versions; `parquet-chat`: on a user's prompt file (chat messages in Parquet,
    the tokenizer's chat template, long prompts dropped)."""
    base = tmp_path_factory.mktemp(f"grpo_{request.param}")
    args = [*train_args, *GRPO]
    if request.param == "demo":
        args += tiny_eval(4, shards=1, rm=True)
    if request.param == "parquet-chat":
        from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file

        args += dataset_overrides(prompt_file(base / "p.parquet"), chat_tokenizer(base / "tok"))
    cli("train", *args, f"run_dir={base}/run")
    return args, kr.final_sha(str(base / "run")), str(base / "run")


def test_grpo_sigkilled_and_resumed_is_bit_identical(tmp_path, grpo_case):
    """The critic-free run: no value model in its checkpoints, and its resume is exact all the same; on the
    demo's prompts and on a prompt dataset (its 64 kept prompts each consumed once per pass). The demo case's
    eval series (versions 4, 8, ..., 20) equals the uninterrupted run's, each step's logged once."""
    args, reference, ref_dir = grpo_case
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, args, random.Random(20261128), kills=2, log=str(tmp_path / "log"))
    assert sum(1 for e in events if e.get("killed")) == 2, events
    assert events[-1] == {"attempt": 2, "killed": False, "exit": 0}
    assert kr.check_run(run, FAULT_STEPS, reference) == []
    assert not glob.glob(f"{run}/checkpoints/*/value*")
    evals = eval_series(ref_dir)
    assert eval_series(run) == evals and sorted(evals) == ([3, 7, 11, 15, 19] if "eval.every=4" in args else [])
    assert all("eval/reward/rm" in e for e in evals.values())  # the reward model's eval source


DYNAMIC = [  # GRPO with refill rounds (gold-rule rewards, 2 samples per prompt: many uniform groups)
    *["algo.name=grpo", "algo.kl_loss=k3", "algo.dynamic_sampling=true", "algo.max_refill_rounds=2"],
    "reward.sources=[{name: gold, kind: function, function: 'hpc_rlhf.demo.task:gold_reward'}]",
    "total_steps=12",
]


def test_dynamic_sampling_sigkilled_and_resumed_is_bit_identical(tmp_path, train_args, mpiexec):
    """Refill rounds are drawn again on a resume exactly as before (their shards reused when intact): the final
    weights, the ledger (each step's shards, kept samples and refill rounds) and the metrics' refill counts equal
    an uninterrupted run's. A refill prompt is not one of the stream's, so the per-pass ledger check is left out."""
    args = [*train_args, *DYNAMIC]
    ref = tmp_path / "reference"
    cli("train", *args, f"run_dir={ref}")
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, args, random.Random(20261131), kills=2, log=str(tmp_path / "log"))
    assert sum(1 for e in events if e.get("killed")) == 2, events
    assert events[-1] == {"attempt": 2, "killed": False, "exit": 0}
    problems = kr.check_run(run, 12, kr.final_sha(str(ref)))
    assert [p for p in problems if not p.startswith("pass ")] == [], problems
    assert open(f"{run}/ledger.jsonl").read() == open(ref / "ledger.jsonl").read()

    def refills(d):
        return [json.loads(x)["algo/refill_rounds"] for x in open(os.path.join(d, "metrics.jsonl"))]

    assert refills(run) == refills(ref) and sum(refills(ref)) > 0


LORA = ["model.lora.r=4"]


@pytest.fixture(scope="module")
def lora_reference(tmp_path_factory, train_args, mpiexec) -> str:
    """SHA-256 of the final (merged) policy of the LoRA fault run, uninterrupted."""
    run = tmp_path_factory.mktemp("lora_reference") / "run"
    cli("train", *train_args, *LORA, f"run_dir={run}")
    return kr.final_sha(str(run))


def test_lora_sigkilled_and_resumed_is_bit_identical(tmp_path, train_args, lora_reference):
    """Checkpoints hold the adapters and their base's hash only; the resume rebuilds the base and is exact."""
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(
        run, [*train_args, *LORA], random.Random(20261129), kills=2, log=str(tmp_path / "log")
    )
    assert sum(1 for e in events if e.get("killed")) == 2, events
    assert events[-1] == {"attempt": 2, "killed": False, "exit": 0}
    assert kr.check_run(run, FAULT_STEPS, lora_reference) == []
    for ckpt in glob.glob(f"{run}/checkpoints/step_*/policy.safetensors"):
        names = set(load_file(ckpt))
        assert names and all("lora_" in n or n == "hpc_rlhf.lora.base_sha256" for n in names), ckpt


FSDP = ["layout.train=2", "train.sharding=fsdp", "total_steps=6"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fsdp_sigkilled_and_resumed_is_bit_identical(tmp_path, train_args, mpiexec, precision):
    """Two trainers holding FSDP shards (each writes its own shard file; nothing is gathered): killed
    once, resumed on the same two (each reads only its own file), the run ends bit-identical to an
    uninterrupted one of the same layout. bf16: FSDP2 mixed precision on fp32 master shards, which the
    rank files hold."""
    args = [*train_args, *FSDP, f"train.precision={precision}"]
    ref = tmp_path / "reference"
    cli("train", *args, f"run_dir={ref}")
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, args, random.Random(20261130), kills=1, log=str(tmp_path / "log"))
    assert sum(1 for e in events if e.get("killed")) == 1, events
    assert events[-1] == {"attempt": 1, "killed": False, "exit": 0}
    assert kr.check_run(run, 6, kr.final_sha(str(ref))) == []
    for ckpt in glob.glob(f"{run}/checkpoints/step_*"):  # per-rank files, no gathered model or moments
        held = set(os.listdir(ckpt))
        assert {"train_rank000_of_002.safetensors", "train_rank001_of_002.safetensors"} <= held, held
        assert not held & {"policy.safetensors", "value.safetensors"}, held
