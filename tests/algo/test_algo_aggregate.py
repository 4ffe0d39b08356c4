"""Loss aggregation (algo.loss_agg) and the KL loss term against plain loops; with global normalisers the
per-rank losses and gradients of any row split sum to the whole minibatch's, for every mode."""

import math

import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, lengths, poison, rand, rows

from hpc_rlhf.algo import LOSS_AGGS, aggregate, kl_loss_terms, policy_loss


def ref_aggregate(x, lens, mode, horizon):
    seqs = [row[:n] for row, n in zip(x, lens)]
    n_tok, n_seq = sum(lens), sum(1 for n in lens if n > 0)
    if mode == "token_mean":
        return sum(sum(s) for s in seqs) / max(n_tok, 1e-8)
    if mode == "seq_mean_token_mean":
        return sum(sum(s) / len(s) for s in seqs if s) / max(n_seq, 1e-8)
    return sum(sum(s) for s in seqs) / (max(n_seq, 1e-8) * horizon)


@pytest.mark.parametrize("mode", LOSS_AGGS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_aggregate_against_loops(mode, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    x = rand(gen, B, T)
    got = aggregate(poison(x, mask), mask, mode, horizon=16.0)
    assert float(got) == pytest.approx(ref_aggregate(rows(x), lengths(mask), mode, 16.0), abs=1e-10)


@pytest.mark.parametrize("mode", LOSS_AGGS)
def test_shards_with_global_normalisers_sum_to_the_whole_minibatch(mode):
    """Rows split over 3 'ranks' (uneven lengths): sum of per-rank losses and gradients == the whole's."""
    gen, mask = batch(9, 6, 7)
    x = rand(gen, 9, 6).requires_grad_(True)
    whole = aggregate(x, mask, mode, horizon=6.0)
    (g_whole,) = torch.autograd.grad(whole, x)
    n_tok, n_seq = mask.sum(), (mask.sum(-1) > 0).sum().double()
    parts = [aggregate(x[s], mask[s], mode, n_tok, n_seq, 6.0) for s in (slice(0, 2), slice(2, 7), slice(7, 9))]
    (g_parts,) = torch.autograd.grad(sum(parts), x)
    assert float(sum(parts).detach()) == pytest.approx(float(whole.detach()), abs=1e-12)
    torch.testing.assert_close(g_parts, g_whole, rtol=0, atol=1e-12)


def test_modes_weigh_tokens_as_documented():
    """One long and one short response, the same per-token loss 1: token_mean = 1, seq_mean_token_mean = 1,
    token_sum_norm = (4 + 1) / (2 * 4); per-token weights 1/5 vs per-sequence 1/2."""
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    x = torch.ones(2, 4)
    assert float(aggregate(x, mask, "token_mean")) == 1.0
    assert float(aggregate(x, mask, "seq_mean_token_mean")) == 1.0
    assert float(aggregate(x, mask, "token_sum_norm", horizon=4.0)) == 5 / 8
    y = torch.tensor([[1.0, 1, 1, 1], [5, 0, 0, 0]])
    assert float(aggregate(y, mask, "token_mean")) == pytest.approx(9 / 5)
    assert float(aggregate(y, mask, "seq_mean_token_mean")) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="token_mean.*token_sum_norm"):
        aggregate(x, mask, "sum")


@pytest.mark.parametrize("mode", LOSS_AGGS)
def test_policy_loss_aggregates_its_per_token_terms(mode):
    gen, mask = batch(5, 6, 3)
    logp, old, adv = rand(gen, 5, 6) - 1, rand(gen, 5, 6) - 1, rand(gen, 5, 6)
    loss, _ = policy_loss(logp, old, adv, mask, 0.2, None, mode, None, 6.0)
    ratio = torch.exp(logp - old)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert float(loss) == pytest.approx(ref_aggregate(rows(pg), lengths(mask), mode, 6.0), abs=1e-10)


def ref_kl_loss(a, b, est):
    if est == "k1":
        return a - b
    if est == "k2":
        return 0.5 * (a - b) ** 2
    return math.exp(b - a) - (b - a) - 1


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
@pytest.mark.parametrize("seed", SEEDS)
def test_kl_loss_terms_against_loops(est, seed):
    gen, _ = batch(4, 5, seed)
    lp, rlp = rand(gen, 4, 5) - 2, rand(gen, 4, 5) - 2
    got = kl_loss_terms(lp, rlp, est)
    for b, (ra, rb) in enumerate(zip(rows(lp), rows(rlp))):
        for t, (a, c) in enumerate(zip(ra, rb)):
            assert float(got[b, t]) == pytest.approx(ref_kl_loss(a, c, est), rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_loss_terms(lp, rlp, "k4")


def test_kl_loss_gradient_pulls_towards_the_reference():
    """k2 and k3 have zero gradient at logp == ref_logp and push logp down where it is above the reference."""
    ref = torch.tensor([[-1.0, -2.0]])
    for est in ("k2", "k3"):
        lp = ref.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(kl_loss_terms(lp, ref, est).sum(), lp)
        assert g.abs().max() == 0
        lp = (ref + 0.5).requires_grad_(True)
        (g,) = torch.autograd.grad(kl_loss_terms(lp, ref, est).sum(), lp)
        assert (g > 0).all()
