"""Group statistics are the trainer's, over the whole step batch: a prompt's group cut over two shards
(in either shard order) and a minibatch cut over two train ranks give the advantages and the summed
policy gradient of one shard on one rank. Real StepData, Trainer and policy (the tiny config)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpc_rlhf.config import load_config
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.trainer_context import TrainContext, build_context
from hpc_rlhf.roles.trainer_step import Norms, StepData, advantages, policy_objective
from tests.conftest import TINY

G = 4  # samples per prompt
PROMPTS = [10, 11, 12, 13]


def samples(seed: int = 0) -> list[dict]:
    """One dict per sample (prompt-major), with ragged prompts and responses and 0/1 rewards (so some
    groups are uniform)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in PROMPTS:
        prompt = rng.integers(5, 30, rng.integers(3, 7))
        for k in range(G):
            n = int(rng.integers(1, 9))
            out.append(
                {
                    "prompt_index": p,
                    "sample_index": k,
                    "prompt": prompt,
                    "response": rng.integers(5, 30, n),
                    "gen": -rng.uniform(0.5, 4.0, n).astype(np.float32),
                    "ref": -rng.uniform(0.5, 4.0, n).astype(np.float32),
                    "reward": float(rng.integers(0, 2)) if p != 13 else 1.0,
                    "eos": bool(rng.integers(0, 2)),
                }
            )
    return out


def part(rows: list[dict]) -> dict[str, np.ndarray]:
    """The fields of a scored shard holding `rows`, as read_shard gives them."""

    def ragged(key):
        flat = np.concatenate([r[key] for r in rows])
        return flat, np.cumsum([0] + [len(r[key]) for r in rows])

    pt, po = ragged("prompt")
    rt, ro = ragged("response")
    return {
        "prompt_index": np.array([r["prompt_index"] for r in rows], dtype=np.int64),
        "sample_index": np.array([r["sample_index"] for r in rows], dtype=np.int32),
        "reward": np.array([r["reward"] for r in rows], dtype=np.float32),
        "eos": np.array([r["eos"] for r in rows]),
        "prompt_tokens": pt,
        "prompt_offsets": po,
        "response_tokens": rt,
        "response_offsets": ro,
        "gen_logprobs": np.concatenate([r["gen"] for r in rows]),
        "ref_logprobs": np.concatenate([r["ref"] for r in rows]),
    }


def keyed(sd: StepData, x: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    return {(int(p), int(s)): x[i] for i, (p, s) in enumerate(zip(sd.prompt_index, sd.sample_index))}


def policy_grad(tr: TrainContext, sd: StepData, tg, shares: list[list[int]], norms: Norms) -> list[torch.Tensor]:
    """The policy gradient summed over `shares` (row lists, one per train rank), as the all-reduce sums it."""
    tr.opt_policy.zero_grad(set_to_none=True)
    for rows in shares:
        idx = torch.as_tensor(sorted(rows))
        loss, _ = policy_objective(tr, sd.batch.select(idx), sd, idx, tg, norms)
        loss.backward()
    return [p.grad.clone() for p in tr.policy.parameters()]


CASES = [
    ["algo.name=grpo"],
    ["algo.name=grpo", "algo.group_std=false", "algo.loss_agg=token_sum_norm", "algo.kl_loss=k3"],
    ["algo.name=grpo", "algo.drop_uniform_groups=true", "algo.loss_agg=seq_mean_token_mean"],
    ["algo.name=rloo", "algo.loss_agg=seq_mean_token_mean", "algo.kl_reward=false"],
    ["algo.name=reinforce_pp"],
]


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: " ".join(o))
def test_a_group_split_over_shards_and_ranks_trains_as_one(overrides, tiny_rm, tmp_path):
    cfg = load_config(TINY, [*tiny_rm["overrides"], f"run_dir={tmp_path}", "generate.samples_per_prompt=4", *overrides])
    tr = build_context(cfg, str(tmp_path), torch.device("cpu"), DataParallel(0, 1))
    assert tr.value is None and tr.opt_value is None  # critic-free: no value model at all
    rows = samples()
    pad = tr.tok.pad_token_id
    one = StepData([part(rows)], pad, "cpu")
    # prompt 11's group is cut between the two shards, and the shards come in the other order
    two = StepData([part(rows[6:]), part(rows[:6])], pad, "cpu")
    tg1, tg2 = (advantages(sd, None, cfg, tr.algorithm, 0.05) for sd in (one, two))
    a1, a2 = keyed(one, tg1.adv), keyed(two, tg2.adv)
    assert a1.keys() == a2.keys() and len(a1) == 16
    for k in a1:
        torch.testing.assert_close(a1[k], a2[k], rtol=0, atol=1e-6)
    assert tg1.metrics == tg2.metrics
    if cfg.algo.name == "grpo" and cfg.algo.drop_uniform_groups:
        assert tg1.metrics["algo/dropped_samples"] >= G  # prompt 13's rewards are all 1

    mask1 = one.batch.response_mask if tg1.loss_mask is None else tg1.loss_mask
    norms = Norms(mask1.sum().clamp(min=1.0), (mask1.sum(-1) > 0).double().sum().clamp(min=1.0), 8.0)
    g_one = policy_grad(tr, one, tg1, [list(range(16))], norms)
    # the same minibatch on two ranks of the two-shard layout: rows of `two` that hold the same samples
    where = {k: i for i, k in enumerate(keyed(two, tg2.adv))}
    order = [where[k] for k in keyed(one, tg1.adv)]
    g_two = policy_grad(tr, two, tg2, [order[::2], order[1::2]], norms)
    for x, y in zip(g_one, g_two):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
    assert max(float(x.abs().max()) for x in g_one) > 0  # the check compares real gradients
