"""Dynamic sampling's rules: refill rounds' prompts and seeds from identity, and the kept groups against a
plain loop over (round, shard, sample)."""

import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.rollout.plan import refill_prompts, sample_seed, shard_plan, step_prompts
from hpc_rlhf.rollout.refill import keep_groups, round_attrs, rounds_used, short_of_groups
from hpc_rlhf.rollout.shard import pack_ragged
from tests.conftest import TINY

DYN = ["algo.name=grpo", "algo.dynamic_sampling=true", "algo.max_refill_rounds=3"]


def test_refill_rounds_draw_new_prompts_and_new_seeds_from_identity():
    cfg = load_config(TINY, DYN)
    n, per, s_per = 64, cfg.generate.prompts_per_step, cfg.generate.shards_per_step
    own = set(step_prompts(cfg.seed, n, per, 5).tolist())
    drawn = [refill_prompts(cfg.seed, n, per, 5, r) for r in (1, 2, 3)]
    flat = np.concatenate(drawn).tolist()
    assert len(set(flat)) == len(flat) and not own & set(flat)  # 32 distinct prompts while 56 are unseen
    assert np.array_equal(refill_prompts(cfg.seed, n, per, 5, 2), drawn[1])  # a round computed alone: the same
    assert not np.array_equal(refill_prompts(cfg.seed, n, per, 6, 1), drawn[0])
    for j in range(s_per):  # round 1 is shards S..2S-1: same split, round's prompts, seeds hashing the round
        p0, p1 = shard_plan(cfg, n, 5, j), shard_plan(cfg, n, 5, s_per + j)
        assert (p0.rnd, p1.rnd) == (0, 1) and len(p0.seeds) == len(p1.seeds)
        assert np.array_equal(np.unique(p1.prompt_indices), np.sort(np.array_split(drawn[0], s_per)[j]))
        assert p1.seeds[0] == sample_seed(cfg.seed, 5, 5, int(p1.prompt_indices[0]), int(p1.sample_indices[0]), 1)
        assert p0.seeds[0] == sample_seed(cfg.seed, 5, 5, int(p0.prompt_indices[0]), int(p0.sample_indices[0]))
        assert sample_seed(1, 5, 5, 3, 0, 1) != sample_seed(1, 5, 5, 3, 0)
    assert round_attrs(cfg, 3) == {} and round_attrs(cfg, 2 * s_per + 1) == {"refill_round": 2}
    assert rounds_used(cfg, [f"r/scored_{j:04d}.h5" for j in range(3 * s_per)]) == 2
    assert rounds_used(load_config(TINY), ["r/scored_0000.h5"]) is None


def _shard(rng, prompts, samples, p_uniform):
    """A scored shard's fields: `samples` per prompt, each group uniform with probability p_uniform."""
    rows = {k: [] for k in ("prompt_index", "sample_index", "reward")}
    resp, prm = [], []
    for p in prompts:
        same = rng.random() < p_uniform
        base = float(rng.integers(0, 3))
        for k in range(samples):
            rows["prompt_index"].append(p)
            rows["sample_index"].append(k)
            rows["reward"].append(base if same else float(rng.integers(0, 3)) + 0.5 * (k == 0))
            prm.append(rng.integers(0, 50, int(rng.integers(1, 4))))
            resp.append(rng.integers(0, 50, int(rng.integers(1, 6))))
    out = {
        "prompt_index": np.array(rows["prompt_index"], np.int64),
        "sample_index": np.array(rows["sample_index"], np.int32),
    }
    out["reward"] = np.array(rows["reward"], np.float32)
    out["eos"] = rng.integers(0, 2, len(resp)).astype(np.uint8)
    out["reward_sources"] = out["reward"][:, None].copy()
    out["group_id"] = out["prompt_index"].copy()
    out["prompt_tokens"], out["prompt_offsets"] = pack_ragged(prm, "int32")
    out["response_tokens"], out["response_offsets"] = pack_ragged(resp, "int32")
    out["gen_logprobs"] = rng.normal(size=len(out["response_tokens"])).astype(np.float32)
    out["ref_logprobs"] = rng.normal(size=len(out["response_tokens"])).astype(np.float32)
    return out


def _reference(by_round, wanted):
    """The plain loop: walk (round, shard, sample); a group is a run of one prompt; keep the first `wanted`
    groups whose rewards differ, then the first uniform ones; return the kept samples in walk order."""
    groups = []
    for parts in by_round:
        for part in parts:
            pi = part["prompt_index"].tolist()
            i = 0
            while i < len(pi):
                k = i
                while k < len(pi) and pi[k] == pi[i]:
                    k += 1
                rewards = [float(part["reward"][x]) for x in range(i, k)]
                resp = [
                    part["response_tokens"][part["response_offsets"][x] : part["response_offsets"][x + 1]]
                    for x in range(i, k)
                ]
                groups.append(
                    (
                        len(set(rewards)) == 1,
                        [
                            (pi[x], int(part["sample_index"][x]), rewards[x - i], resp[x - i].tolist())
                            for x in range(i, k)
                        ],
                    )
                )
                i = k
    good, fill = [], []
    for n, (uniform, _) in enumerate(groups):
        if not uniform and len(good) < wanted:
            good.append(n)
    for n, (uniform, _) in enumerate(groups):
        if uniform and len(good) + len(fill) < wanted:
            fill.append(n)
    kept = sorted(good + fill)
    samples = [s for n in kept for s in groups[n][1]]
    gids = [k for k, n in enumerate(kept) for _ in groups[n][1]]
    return samples, gids, len(good)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("p_uniform", [0.2, 0.7, 1.0])
def test_kept_groups_are_the_plain_loops(seed, p_uniform):
    cfg = load_config(TINY, DYN)
    rng = np.random.default_rng([seed, int(p_uniform * 10)])
    per, n_shards = cfg.generate.prompts_per_step, cfg.generate.shards_per_step
    by_round = []
    for _ in range(4):
        chunks = np.array_split(rng.permutation(64)[:per], n_shards)
        by_round.append([_shard(rng, c.tolist(), 2, p_uniform) for c in chunks])
        if not short_of_groups(cfg, by_round):
            break
    want, gids, good = _reference(by_round, per)
    parts, metrics = keep_groups(cfg, by_round)
    got = []
    for part in parts:
        off = part["response_offsets"]
        for x in range(len(part["prompt_index"])):
            resp = part["response_tokens"][off[x] : off[x + 1]].tolist()
            got.append((int(part["prompt_index"][x]), int(part["sample_index"][x]), float(part["reward"][x]), resp))
    assert got == want
    assert np.concatenate([p["group_id"] for p in parts]).tolist() == gids
    assert metrics == {
        "algo/refill_rounds": float(len(by_round) - 1),
        "algo/prompts_drawn": float(per * len(by_round)),
        "algo/kept_groups": float(good),
        "algo/short_groups": float(per - good),
    }
    assert (good == per) == (not short_of_groups(load_config(TINY, [*DYN, "algo.max_refill_rounds=9"]), by_round))
    if p_uniform == 1.0:
        assert len(by_round) == 4 and good == 0  # every round drawn, all uniform: the first groups fill the step
