"""Clip-higher (asymmetric eps_low/eps_high, DAPO) and the dual clip for negative advantages (Ye et al.
2020) in the PPO clipped surrogate, against plain-loop references."""

import math

import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, poison, rand, rows

from hpc_rlhf.algo import policy_loss


def ref_clip(lp, olp, adv, mask, lo, hi, c):
    """(loss, d loss / d logp per token, clipfrac, dual_clipfrac) with Python loops (token mean)."""
    total, n, clipped, dual = 0.0, 0.0, 0.0, 0.0
    grad = [[0.0] * len(r) for r in lp]
    for b in range(len(lp)):
        for t in range(len(lp[b])):
            if mask[b][t] != 1.0:
                continue
            ratio = math.exp(lp[b][t] - olp[b][t])
            a = adv[b][t]
            pg1 = -a * ratio
            pg2 = -a * min(max(ratio, 1 - lo), 1 + hi)
            pg, g = (pg1, -a * ratio) if pg1 >= pg2 else (pg2, 0.0)
            clipped += 1.0 if pg2 > pg1 else 0.0
            if c > 0 and a < 0 and -a * c < pg:
                pg, g = -a * c, 0.0
                dual += 1.0
            total += pg
            grad[b][t] = g
            n += 1
    norm = max(n, 1e-8)
    return total / norm, [[g / norm for g in r] for r in grad], clipped / norm, dual / norm


@pytest.mark.parametrize("lo,hi,c", [(0.2, 0.28, 0.0), (0.1, 0.3, 0.0), (0.2, 0.2, 3.0), (0.2, 0.28, 1.5)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_clip_higher_and_dual_clip_against_loops(lo, hi, c, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    old = rand(gen, B, T) - 3.0
    logp = (old + rand(gen, B, T, scale=1.0)).requires_grad_(True)  # ratios up to e^3: the dual clip bites
    adv = rand(gen, B, T)
    loss, m = policy_loss(logp, poison(old, mask), poison(adv, mask), mask, lo, clip_high=hi, dual_clip=c)
    loss.backward()
    e_loss, e_grad, e_cf, e_dual = ref_clip(rows(logp), rows(old), rows(adv), rows(mask), lo, hi, c)
    assert loss.item() == pytest.approx(e_loss, abs=1e-12)
    assert m["ppo/clipfrac"].item() == pytest.approx(e_cf, abs=1e-12)
    assert ("ppo/dual_clipfrac" in m) == (c > 0)
    if c > 0:
        assert m["ppo/dual_clipfrac"].item() == pytest.approx(e_dual, abs=1e-12)
    for b in range(B):
        for t in range(T):
            assert float(logp.grad[b, t]) == pytest.approx(e_grad[b][t], abs=1e-12)


def test_defaults_are_the_symmetric_clip_bit_for_bit():
    gen, mask = batch(6, 12, 0)
    old = rand(gen, 6, 12) - 3.0
    logp = old + rand(gen, 6, 12, scale=1.0)
    adv = rand(gen, 6, 12)
    a, _ = policy_loss(logp, old, adv, mask, 0.2)
    b, _ = policy_loss(logp, old, adv, mask, 0.2, clip_high=None, dual_clip=0.0)
    c, _ = policy_loss(logp, old, adv, mask, 0.2, clip_high=0.2)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_hand_computed_corners():
    mask = torch.ones(1, 3, dtype=torch.float64)
    old = torch.zeros(1, 3, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.25, 5.0, 5.0]], dtype=torch.float64))
    adv = torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64)
    # token 0: A > 0, ratio 1.25 is inside the raised upper clip 1.28: loss -1.25 (the symmetric clip gives -1.2)
    # token 1: A < 0, ratio 5: PPO's loss 5, the dual clip caps it at c = 3
    # token 2: A > 0, ratio 5: clipped above at 1.28, the dual clip does not apply
    loss, m = policy_loss(logp, old, adv, mask, 0.2, clip_high=0.28, dual_clip=3.0)
    assert loss.item() == pytest.approx((-1.25 + 3.0 - 1.28) / 3, abs=1e-12)
    assert m["ppo/dual_clipfrac"].item() == pytest.approx(1 / 3)
    sym, _ = policy_loss(logp, old, adv, mask, 0.2)
    assert sym.item() == pytest.approx((-1.2 + 5.0 - 1.2) / 3, abs=1e-12)
