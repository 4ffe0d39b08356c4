"""TIS weights and the sampler-trainer mismatch metrics against plain per-token loops."""

from __future__ import annotations

import math

import pytest
import torch

from hpc_rlhf.algo.mismatch import behavior_logprobs, mismatch_metrics, tis_weights


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, t = 5, 7
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    sampler = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.5
    lengths = [7, 3, 0, 5, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in lengths], dtype=torch.float64)
    old[mask == 0] = float("nan")  # padding is never read
    sampler[mask == 0] = float("inf")
    return old, sampler, mask


@pytest.mark.parametrize("cap", [1.0, 1.5, 2.0, 100.0])
def test_tis_weights_match_a_loop(cap):
    old, sampler, mask = _batch()
    w = tis_weights(old, sampler, mask, cap)
    for i in range(old.shape[0]):
        for j in range(old.shape[1]):
            want = min(math.exp(old[i, j] - sampler[i, j]), cap) if mask[i, j] else 0.0
            assert w[i, j].item() == pytest.approx(want, rel=1e-6)
    assert not w.requires_grad


def test_tis_weights_carry_no_gradient():
    old, sampler, mask = _batch(1)
    old = old.nan_to_num(0.0).requires_grad_()
    assert not tis_weights(old, sampler, mask, 2.0).requires_grad


def test_mismatch_metrics_match_a_loop():
    old, sampler, mask = _batch(2)
    cap = 1.2
    m = mismatch_metrics(old, sampler, mask, cap)
    rs = [math.exp(old[i, j] - sampler[i, j]) for i in range(5) for j in range(7) if mask[i, j]]
    n = len(rs)
    assert m["mismatch/kl"].item() == pytest.approx(sum(r - 1 - math.log(r) for r in rs) / n, rel=1e-5)
    assert m["mismatch/k1"].item() == pytest.approx(sum(-math.log(r) for r in rs) / n, rel=1e-5)
    assert m["mismatch/ratio_mean"].item() == pytest.approx(sum(rs) / n, rel=1e-5)
    assert m["mismatch/ratio_max"].item() == pytest.approx(max(rs), rel=1e-5)
    assert m["mismatch/capped_frac"].item() == pytest.approx(sum(r > cap for r in rs) / n)
    assert m["mismatch/kl"].item() > 0


def test_no_mismatch_reads_zero():
    old, _, mask = _batch(3)
    m = mismatch_metrics(old, old.clone(), mask, 2.0)
    assert m["mismatch/kl"].item() == 0 and m["mismatch/k1"].item() == 0
    assert m["mismatch/ratio_mean"].item() == 1 == m["mismatch/ratio_max"].item()
    assert m["mismatch/capped_frac"].item() == 0
    assert torch.equal(tis_weights(old, old, mask, 2.0), mask)


def test_behavior_logprobs_picks_the_source():
    s, r = torch.zeros(2, 3), torch.ones(2, 3)
    assert behavior_logprobs("sampler", s, r) is s
    assert behavior_logprobs("recompute", s, r) is r
    with pytest.raises(ValueError, match="recompute"):
        behavior_logprobs("recompute", s, None)
