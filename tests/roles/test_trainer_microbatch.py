"""Token-budget micro-batches (train.max_tokens_per_microbatch) give the padded trainer's update, and the
overlong filter (algo.overlong_filter) leaves truncated responses out of the loss. Real StepData,
train context, policy and value model (the tiny config, widened to 256-token responses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpc_rlhf.config import load_config
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.trainer_context import build_context
from hpc_rlhf.roles.trainer_micro import micro_batches
from hpc_rlhf.roles.trainer_step import Norms, StepData, advantages, minibatch_epochs, old_values, policy_objective
from hpc_rlhf.stages.tokenizer import save_run_tokenizer
from tests.conftest import TINY
from tests.roles.test_trainer_groups import part

MAX_NEW = 256


def ragged_rows(seed: int, n: int = 16, lo: int = 8, hi: int = MAX_NEW) -> list[dict]:
    """`n` samples, 2 per prompt, prompts of 3 to 6 tokens, responses of `lo` to `hi` tokens (both present)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(lo, hi + 1, n)
    lens[0], lens[1] = lo, hi
    out = []
    for i, r in enumerate(lens):
        out.append(
            {
                "prompt_index": i // 2,
                "sample_index": i % 2,
                "prompt": rng.integers(5, 30, rng.integers(3, 7)),
                "response": rng.integers(5, 30, int(r)),
                "gen": -rng.uniform(0.5, 4.0, int(r)).astype(np.float32),
                "ref": -rng.uniform(0.5, 4.0, int(r)).astype(np.float32),
                "reward": float(rng.normal()),
                "eos": bool(r < hi),
            }
        )
    return out


def context(tmp_path, *overrides):
    """A train context of the tiny config widened to MAX_NEW-token responses (the demo tokenizer; the
    value model starts from the policy)."""
    cfg = load_config(
        TINY,
        [
            f"run_dir={tmp_path}",
            "model.value_init=policy",
            "model.arch.max_position=512",
            f"generate.max_new_tokens={MAX_NEW}",
            *overrides,
        ],
    )
    save_run_tokenizer(cfg, str(tmp_path))
    return build_context(cfg, str(tmp_path), torch.device("cpu"), DataParallel(0, 1))


def one_step(ctx, parts: list[dict]) -> list[torch.Tensor]:
    sd = StepData(parts, ctx.tok.pad_token_id, "cpu")
    tg = advantages(sd, old_values(ctx, sd), ctx.cfg, ctx.algorithm, ctx.kl_ctl.value)
    minibatch_epochs(ctx, 0, sd, tg)
    models = [ctx.policy] + ([ctx.value] if ctx.value is not None else [])
    return [p.detach().clone() for m in models for p in m.parameters()]


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_token_budget_step_matches_the_padded_step(algo, tmp_path):
    parts = [part(ragged_rows(0))]
    padded = one_step(context(tmp_path / "a", f"algo.name={algo}"), parts)
    budget = context(tmp_path / "b", f"algo.name={algo}", "train.max_tokens_per_microbatch=600")
    sd = StepData(parts, budget.tok.pad_token_id, "cpu")
    split = micro_batches(sd.batch, torch.arange(8), 600)
    assert len(split) >= 2 and all(b.input_ids.numel() <= 600 or len(r) == 1 for b, r in split)
    assert sum(b.input_ids.numel() for b, _ in split) < sd.batch.select(torch.arange(8)).input_ids.numel() * 0.6
    before = [p.detach().clone() for p in budget.policy.parameters()]
    packed = one_step(budget, parts)
    moved = max(float((a - b).abs().max()) for a, b in zip(before, packed))
    for a, b in zip(padded, packed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert moved > 1e-4  # the step moved the weights far more than the tolerance


def test_micro_batches_cover_every_row_once_within_the_budget():
    parts = [part(ragged_rows(1, n=24))]
    sd = StepData(parts, 0, "cpu")
    rows = torch.arange(3, 24, 2)
    for budget in (1, 300, 800, 10**6):
        split = micro_batches(sd.batch, rows, budget)
        got = sorted(int(i) for _, r in split for i in r)
        assert got == rows.tolist()
        for b, r in split:
            assert b.input_ids.shape[1] == b.prompt_width + b.response_width
            assert len(r) == 1 or b.input_ids.numel() <= budget
            # the trimmed layout holds every real token of its rows
            assert int(b.attention_mask.sum()) == int(sd.batch.attention_mask[r].sum())
        assert (len(split) == 1) == (budget == 10**6)


def test_overlong_filter_leaves_truncated_responses_out_of_the_loss(tmp_path):
    rows = ragged_rows(2)
    for i in (2, 3, 7):  # truncated: no EOS at the length limit
        rows[i]["response"], rows[i]["eos"] = np.resize(rows[i]["response"], MAX_NEW), False
        rows[i]["gen"], rows[i]["ref"] = np.resize(rows[i]["gen"], MAX_NEW), np.resize(rows[i]["ref"], MAX_NEW)
    ctx = context(tmp_path, "algo.name=grpo", "algo.overlong_filter=true")
    sd = StepData([part(rows)], ctx.tok.pad_token_id, "cpu")
    tg = advantages(sd, None, ctx.cfg, ctx.algorithm, 0.05)
    cut = [i for i, r in enumerate(rows) if not r["eos"] and len(r["response"]) == MAX_NEW]
    assert tg.metrics["algo/overlong_filtered"] == len(cut) == 4  # rows 1, 2, 3, 7
    assert all(float(tg.loss_mask[i].sum()) == (0 if i in cut else len(rows[i]["response"])) for i in range(16))
    # the loss over every row with the filter == the loss over the kept rows alone (same advantages)
    keep = torch.as_tensor([i for i in range(16) if i not in cut])
    n_tok = tg.loss_mask.sum()
    norms = Norms(n_tok, torch.tensor(12.0, dtype=n_tok.dtype), float(MAX_NEW))
    everything = torch.arange(16)
    full, _ = policy_objective(ctx, sd.batch.select(everything), sd, everything, tg, norms)
    kept, _ = policy_objective(ctx, sd.batch.select(keep), sd, keep, tg, norms)
    torch.testing.assert_close(full.detach(), kept.detach(), rtol=1e-6, atol=1e-7)
    tg.loss_mask = None  # unfiltered: the truncated rows count
    unfiltered, _ = policy_objective(ctx, sd.batch.select(everything), sd, everything, tg, norms)
    assert abs(float(unfiltered.detach()) - float(full.detach())) > 1e-4
