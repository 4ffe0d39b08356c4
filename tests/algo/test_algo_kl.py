import json
import math

import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, lengths, poison, rand, rows

from hpc_rlhf.algo import (
    AdaptiveKLController,
    FixedKLController,
    kl_penalty,
    make_kl_controller,
    token_rewards,
)


def ref_kl(lp, rlp, estimator):
    if estimator == "k1":
        return lp - rlp
    r = rlp - lp
    return math.exp(r) - r - 1.0


def ref_token_rewards(score, kl, mask, beta, clip):
    out = []
    for s, kr, mr in zip(score, kl, mask):
        row = [-beta * k if m == 1.0 else 0.0 for k, m in zip(kr, mr)]
        valid = [t for t, m in enumerate(mr) if m == 1.0]
        if valid:
            row[valid[-1]] += min(max(s, -clip), clip) if clip > 0 else s
        out.append(row)
    return out


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_kl_penalty_against_loops(estimator, shape, seed):
    B, T = shape
    gen, _ = batch(B, T, seed)
    lp, rlp = rand(gen, B, T) - 2.0, rand(gen, B, T) - 2.0
    got = kl_penalty(lp, rlp, estimator)
    assert got.shape == (B, T)
    for b, (lr, rr) in enumerate(zip(rows(lp), rows(rlp))):
        for t, (a, c) in enumerate(zip(lr, rr)):
            assert float(got[b, t]) == pytest.approx(ref_kl(a, c, estimator), rel=1e-12, abs=1e-12)


def test_k3_nonnegative_and_zero_on_equal():
    gen = torch.Generator().manual_seed(0)
    lp = rand(gen, 64, 9, scale=3.0)
    rlp = rand(gen, 64, 9, scale=3.0)
    assert torch.all(kl_penalty(lp, rlp, "k3") >= 0)
    assert torch.all(kl_penalty(lp, lp, "k3") == 0)
    assert torch.all(kl_penalty(lp, lp, "k1") == 0)
    # k1 is signed, k3 is not
    assert (kl_penalty(lp, rlp, "k1") < 0).any()
    # small differences: exp(r) - 1 - r ~ r^2/2 without cancellation
    assert kl_penalty(torch.tensor([1e-6]), torch.tensor([0.0]), "k3").item() == pytest.approx(0.5e-12, rel=1e-5)


def test_unknown_estimator_lists_valid_ones():
    with pytest.raises(ValueError, match="k1.*k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k2")


@pytest.mark.parametrize("clip", [0.0, 0.7])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_token_rewards_against_loops(clip, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    kl = rand(gen, B, T)
    score = rand(gen, B, scale=2.0)
    beta = 0.13
    got = token_rewards(score, poison(kl, mask), mask, beta, reward_clip=clip)
    expect = ref_token_rewards([float(s) for s in score], rows(kl), rows(mask), beta, clip)
    assert got.shape == (B, T)
    for b in range(B):
        for t in range(T):
            assert float(got[b, t]) == pytest.approx(expect[b][t], abs=1e-12)


def test_score_lands_exactly_on_last_valid_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    score = torch.tensor([10.0, 20.0, 30.0, -40.0])
    r = token_rewards(score, torch.zeros(4, 4), mask, beta=0.5)
    expect = torch.zeros(4, 4)
    expect[0, 2], expect[1, 3], expect[3, 0] = 10.0, 20.0, -40.0
    assert torch.equal(r, expect)  # row 2 has no valid token: no score anywhere
    # with a KL term: -beta * kl on every valid token, score added on top at the last one
    r = token_rewards(score, torch.ones(4, 4), mask, beta=0.5, reward_clip=15.0)
    assert r[0].tolist() == [-0.5, -0.5, 9.5, 0.0]  # 10 is inside the clip
    assert r[1].tolist() == [-0.5, -0.5, -0.5, 14.5]  # 20 clipped to 15
    assert r[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert r[3].tolist() == [-15.5, 0.0, 0.0, 0.0]
    assert lengths(mask) == [3, 4, 0, 1]


def test_fixed_controller():
    c = FixedKLController(0.05)
    c.update(123.0, 64)
    assert c.value == 0.05
    d = c.state_dict()
    c2 = FixedKLController(0.9)
    c2.load_state_dict(json.loads(json.dumps(d)))
    assert c2.value == 0.05


@pytest.mark.parametrize(
    "current_kl, expected_mult",
    [
        (9.0, 1 + 0.2 * 256 / 10000),  # error 0.5, clipped to +0.2
        (3.0, 1 - 0.2 * 256 / 10000),  # error -0.5, clipped to -0.2
        (6.6, 1 + 0.1 * 256 / 10000),  # error 0.1, inside the clip
        (6.0, 1.0),  # on target
    ],
)
def test_adaptive_update_hand_computed(current_kl, expected_mult):
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(current_kl, 256)
    assert c.value == pytest.approx(0.1 * expected_mult, rel=1e-12)


def test_adaptive_state_round_trip_is_exact():
    c = AdaptiveKLController(0.05, target=6.0, horizon=1000)
    for kl in (1.0, 8.3, 6.1, 20.0, 0.2):
        c.update(kl, 37)
    assert c.value != 0.05
    state = json.loads(json.dumps(c.state_dict()))
    c2 = AdaptiveKLController(0.05, target=6.0, horizon=1000)
    c2.load_state_dict(state)
    assert c2.value == c.value  # bit-exact
    for kl in (3.0, 9.0):
        c.update(kl, 37)
        c2.update(kl, 37)
    assert c2.value == c.value


def test_make_kl_controller():
    assert isinstance(make_kl_controller(False, 0.1, 6.0, 10000), FixedKLController)
    a = make_kl_controller(True, 0.1, 6.0, 10000)
    assert isinstance(a, AdaptiveKLController) and a.value == 0.1
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
