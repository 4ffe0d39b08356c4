"""The SFT stage: the loss is on the response tokens only, packing changes no loss, the exported folder is a
policy PPO loads, SIGKILL + resume ends bit-identical and 2 ranks match 1 within the PPO tests' tolerance."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hpc_rlhf.checkpoint.store import list_checkpoints
from hpc_rlhf.config import load_config
from hpc_rlhf.data.sft import conversation_example, load_examples, pair_example
from hpc_rlhf.models.build import build_policy, load_tokenizer
from hpc_rlhf.stages.sft import epoch_rows, layout, summed_loss
from tests.conftest import TINY, cli, kr
from tests.stages.stage_data import demo_tokenizer, sft_jsonl, vocab

STEPS = 24  # 48 examples, batch 4, 2 epochs


@pytest.fixture(scope="module")
def sft_args(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("sft_data")
    return [
        TINY,
        f"sft.data_path={sft_jsonl(d / 'sft.jsonl', 48)}",
        f"model.tokenizer_path={demo_tokenizer(d)}",
        "sft.epochs=2",
        "sft.batch_size=4",
        "sft.lr=3e-3",
    ]


@pytest.fixture(scope="module")
def sft_reference(tmp_path_factory, sft_args, mpiexec) -> str:
    """The run dir of the uninterrupted single-rank SFT run."""
    run = tmp_path_factory.mktemp("sft_ref") / "run"
    cli("sft", *sft_args, f"run_dir={run}")
    return str(run)


def test_loss_mask_covers_the_response_and_eos_only(tmp_path):
    tok = load_tokenizer(load_config(TINY, [f"model.tokenizer_path={demo_tokenizer(tmp_path)}"]))
    w = vocab()
    ex = pair_example(tok, f"{w[0]} {w[1]} {w[2]}", f"{w[3]} {w[4]}", chat=False, where="x")
    assert tok.decode(ex.ids[ex.loss_mask]).split() == [w[3], w[4], tok.eos_token]
    assert tok.decode(ex.ids[~ex.loss_mask]).split() == w[:3]


def test_chat_conversation_trains_on_the_assistant_turns_only(tmp_path):
    tok = load_tokenizer(load_config(TINY, [f"model.tokenizer_path={demo_tokenizer(tmp_path, chat=True)}"]))
    w = vocab()
    msgs = [
        {"role": "user", "content": f"{w[0]} {w[1]}"},
        {"role": "assistant", "content": w[2]},
        {"role": "user", "content": w[3]},
        {"role": "assistant", "content": f"{w[4]} {w[5]}"},
    ]
    ex = conversation_example(tok, msgs, "x")
    assert tok.decode(ex.ids[ex.loss_mask]).split() == [w[2], w[4], w[5]]


def test_packed_rows_give_the_unpacked_loss(tmp_path, sft_args):
    cfg = load_config(sft_args[0], [*sft_args[1:], "sft.packing=true", "sft.max_len=40"])
    tok = load_tokenizer(cfg)
    examples, _ = load_examples(cfg, tok)
    model = build_policy(cfg, tok)
    packed = epoch_rows(cfg, examples, 0)
    assert len(packed) < len(examples) and all(sum(len(examples[i].ids) for i in r) <= 40 for r in packed)
    singles = [[i] for r in packed for i in r]
    with torch.no_grad():
        a = summed_loss(model, layout(examples, packed, tok.pad_token_id, packed=True))
        b = summed_loss(model, layout(examples, singles, tok.pad_token_id, packed=False))
    assert abs(a.item() - b.item()) < 1e-4 * abs(b.item())


@pytest.mark.mpi
def test_sft_learns_and_exports_a_policy_ppo_loads(sft_reference, sft_args):
    losses = [m["sft/loss"] for m in kr.metrics_since(sft_reference, 0)]
    assert len(losses) == STEPS and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3, losses
    policy = f"{sft_reference}/final/policy"
    AutoModelForCausalLM.from_pretrained(policy, local_files_only=True)
    cfg = load_config(TINY, [f"model.policy_path={policy}"])  # what the next stage takes
    tok = load_tokenizer(cfg)
    assert len(tok) == build_policy(cfg, tok).config.vocab_size


@pytest.mark.mpi
def test_sft_sigkilled_and_resumed_is_bit_identical(tmp_path, sft_args, sft_reference):
    run = str(tmp_path / "run")
    events = kr.kill_resume_cycle(run, [*sft_args, "stage=sft"], random.Random(15), kills=2, log=str(tmp_path / "log"))
    assert sum(1 for e in events if e.get("killed")) == 2, events
    assert events[-1] == {"attempt": 2, "killed": False, "exit": 0}
    assert kr.final_sha(run) == kr.final_sha(sft_reference)
    assert [m["step"] for m in kr.metrics_since(run, 0)] == list(range(STEPS))
    assert all(c.valid for c in list_checkpoints(run))


@pytest.mark.mpi
def test_sft_on_two_ranks_matches_one(tmp_path, sft_args, sft_reference):
    run = tmp_path / "two"
    cli("sft", *sft_args, f"run_dir={run}", "sft.ranks=2")
    a = load_file(f"{sft_reference}/final/policy/model.safetensors")
    b = load_file(f"{run}/final/policy/model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, worst  # the PPO layout test's tolerance (tests/cluster/test_pipeline.py)
