"""GRPO, RLOO and REINFORCE++ advantages against plain-loop references on ragged batches (random
lengths, random group sizes in random order), and the group statistics' corner cases."""

import random

import pytest
import torch
from algo_helpers import SEEDS, batch, lengths, poison, rand, rows

from hpc_rlhf.algo import (
    grpo_advantages,
    reinforce_pp_advantages,
    reward_to_go,
    rloo_advantages,
    uniform_groups,
)

SHAPES = [(2, 1), (5, 4), (9, 7), (16, 12)]


def ragged_groups(B: int, seed: int) -> list[int]:
    """Group keys of B samples: groups of random sizes 1..4 with sparse keys, shuffled."""
    rng = random.Random(seed)
    keys: list[int] = []
    while len(keys) < B:
        keys += [rng.randrange(1000)] * rng.randint(1, 4)
    keys = keys[:B]
    rng.shuffle(keys)
    return keys


def group_members(keys: list[int], i: int) -> list[int]:
    return [j for j, k in enumerate(keys) if k == keys[i]]


def ref_grpo(r: list[float], keys: list[int], scale: bool, eps: float = 1e-6) -> list[float]:
    out = []
    for i in range(len(r)):
        g = [r[j] for j in group_members(keys, i)]
        mean = sum(g) / len(g)
        std = (sum((x - mean) ** 2 for x in g) / (len(g) - 1)) ** 0.5 if len(g) > 1 else 0.0
        out.append((r[i] - mean) / (std + eps) if scale else r[i] - mean)
    return out


def ref_rloo(r: list[float], keys: list[int]) -> list[float]:
    out = []
    for i in range(len(r)):
        others = [r[j] for j in group_members(keys, i) if j != i]
        out.append(r[i] - sum(others) / len(others) if others else 0.0)
    return out


def per_token(per_sample: list[float], lens: list[int], T: int) -> list[list[float]]:
    return [[a if t < n else 0.0 for t in range(T)] for a, n in zip(per_sample, lens)]


def assert_rows_close(got: torch.Tensor, expect: list[list[float]], tol: float = 1e-6) -> None:
    for b, row in enumerate(expect):
        for t, v in enumerate(row):
            assert float(got[b, t]) == pytest.approx(v, abs=tol, rel=tol), (b, t)


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_grpo_against_loops(scale, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    r, keys = rand(gen, B, scale=3.0), ragged_groups(B, seed)
    got = grpo_advantages(r, torch.tensor(keys), mask, scale_by_std=scale)
    assert got.shape == (B, T)
    assert_rows_close(got, per_token(ref_grpo(r.tolist(), keys, scale), lengths(mask), T))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_rloo_against_loops(shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    r, keys = rand(gen, B, scale=3.0), ragged_groups(B, seed)
    got = rloo_advantages(r, torch.tensor(keys), mask)
    assert_rows_close(got, per_token(ref_rloo(r.tolist(), keys), lengths(mask), T))


def ref_reward_to_go(rewards, lens, gamma):
    out = []
    for row, n in zip(rewards, lens):
        g, acc = [0.0] * len(row), 0.0
        for t in reversed(range(n)):
            acc = row[t] + gamma * acc
            g[t] = acc
        out.append(g)
    return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_pp_against_loops(gamma, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    rewards = rand(gen, B, T)
    expect_ret = ref_reward_to_go(rows(rewards), lengths(mask), gamma)
    assert_rows_close(reward_to_go(poison(rewards, mask), mask, gamma), expect_ret)
    adv, ret = reinforce_pp_advantages(poison(rewards, mask, float("inf")), mask, gamma)
    assert_rows_close(ret, expect_ret)
    valid = [v for row, n in zip(expect_ret, lengths(mask)) for v in row[:n]]
    mean = sum(valid) / len(valid)
    var = sum((v - mean) ** 2 for v in valid) / (len(valid) - 1) if len(valid) > 1 else 0.0
    white = [
        [(v - mean) / (var + 1e-8) ** 0.5 if t < n else 0.0 for t, v in enumerate(row)]
        for row, n in zip(expect_ret, lengths(mask))
    ]
    assert_rows_close(adv, white, tol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_uniform_groups_against_loops(seed):
    gen = torch.Generator().manual_seed(seed)
    keys = ragged_groups(20, seed)
    scores = torch.randint(0, 2, (20,), generator=gen).double()  # 0/1 rewards: uniform groups are common
    got, n = uniform_groups(scores, torch.tensor(keys))
    expect = [len({float(scores[j]) for j in group_members(keys, i)}) == 1 for i in range(20)]
    assert got.tolist() == expect
    assert n == len({keys[i] for i in range(20) if expect[i]})


def test_group_corners():
    mask = torch.ones(4, 2, dtype=torch.float64)
    r = torch.tensor([1.0, 3.0, 5.0, 5.0], dtype=torch.float64)
    keys = torch.tensor([7, 7, 9, 2])  # a group of two, two groups of one
    assert grpo_advantages(r, keys, mask)[:, 0].tolist() == pytest.approx(
        [-1 / (2**0.5 + 1e-6), 1 / (2**0.5 + 1e-6), 0, 0]
    )
    assert grpo_advantages(r, keys, mask, scale_by_std=False)[:, 0].tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert rloo_advantages(r, keys, mask)[:, 0].tolist() == [-2.0, 2.0, 0.0, 0.0]
    same = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64)  # a uniform group: zero advantage, no nan
    assert grpo_advantages(same, torch.zeros(3, dtype=torch.long), torch.ones(3, 1)).abs().max() == 0


@pytest.mark.parametrize("fn", [grpo_advantages, rloo_advantages])
def test_a_group_split_and_reordered_gives_the_same_advantages(fn):
    """Samples of one group in any order (as a group cut over shards arrives) get the same advantages."""
    gen, mask = batch(12, 5, 4)
    r, keys = rand(gen, 12), torch.tensor([3, 3, 3, 8, 8, 8, 1, 1, 1, 5, 5, 5])
    perm = torch.randperm(12, generator=gen)
    a, b = fn(r, keys, mask), fn(r[perm], keys[perm], mask[perm])
    torch.testing.assert_close(a[perm], b, rtol=0, atol=1e-12)


def test_float32_inputs_stay_float32():
    mask = torch.ones(4, 3)
    r, keys = torch.randn(4), torch.tensor([0, 0, 1, 1])
    assert grpo_advantages(r, keys, mask).dtype == rloo_advantages(r, keys, mask).dtype == torch.float32
    assert reinforce_pp_advantages(torch.randn(4, 3), mask, 1.0)[0].dtype == torch.float32
