import math

import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, poison, rand, rows

from hpc_rlhf.algo import entropy_from_logits, explained_variance, masked_mean, policy_loss, value_loss

EPS = 0.2


def ref_policy(lp, olp, adv, mask, eps, normalizer=None):
    """(loss, d loss / d logp per token, clipfrac, approx_kl, ratio_mean) with Python loops."""
    total, n, clipped, akl, rsum = 0.0, 0.0, 0.0, 0.0, 0.0
    grad = [[0.0] * len(r) for r in lp]
    for b in range(len(lp)):
        for t in range(len(lp[b])):
            if mask[b][t] != 1.0:
                continue
            ratio = math.exp(lp[b][t] - olp[b][t])
            a = adv[b][t]
            pg1 = -a * ratio
            pg2 = -a * min(max(ratio, 1 - eps), 1 + eps)
            total += max(pg1, pg2)
            grad[b][t] = -a * ratio if pg1 >= pg2 else 0.0
            clipped += 1.0 if pg2 > pg1 else 0.0
            akl += 0.5 * (lp[b][t] - olp[b][t]) ** 2
            rsum += ratio
            n += 1
    norm = n if normalizer is None else normalizer
    norm = max(norm, 1e-8)
    grad = [[g / norm for g in r] for r in grad]
    k = max(n, 1e-8)
    return total / norm, grad, clipped / k, akl / k, rsum / k


def ref_value(v, old, ret, mask, clip, normalizer=None):
    total, n, clipped = 0.0, 0.0, 0.0
    for b in range(len(v)):
        for t in range(len(v[b])):
            if mask[b][t] != 1.0:
                continue
            sq = (v[b][t] - ret[b][t]) ** 2
            if clip > 0:
                vc = old[b][t] + min(max(v[b][t] - old[b][t], -clip), clip)
                sqc = (vc - ret[b][t]) ** 2
                total += max(sq, sqc)
                clipped += 1.0 if sqc > sq else 0.0
            else:
                total += sq
            n += 1
    norm = max(n if normalizer is None else normalizer, 1e-8)
    return 0.5 * total / norm, clipped / max(n, 1e-8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_policy_loss_against_loops(shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    old = rand(gen, B, T) - 3.0
    logp = (old + rand(gen, B, T, scale=0.4)).requires_grad_(True)  # ratios on both sides of the clip
    adv = rand(gen, B, T)
    loss, m = policy_loss(logp, poison(old, mask), poison(adv, mask), mask, EPS)
    loss.backward()
    e_loss, e_grad, e_cf, e_akl, e_ratio = ref_policy(rows(logp), rows(old), rows(adv), rows(mask), EPS)
    assert loss.item() == pytest.approx(e_loss, abs=1e-12)
    assert m["ppo/clipfrac"].item() == pytest.approx(e_cf, abs=1e-12)
    assert m["ppo/approx_kl"].item() == pytest.approx(e_akl, abs=1e-12)
    assert m["ppo/ratio_mean"].item() == pytest.approx(e_ratio, abs=1e-12)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())
    for b in range(B):
        for t in range(T):
            assert float(logp.grad[b, t]) == pytest.approx(e_grad[b][t], abs=1e-12)


@pytest.mark.parametrize("clip", [0.0, 0.2])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_value_loss_against_loops(clip, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    old = rand(gen, B, T)
    v = old + rand(gen, B, T, scale=0.4)
    ret = rand(gen, B, T)
    loss, m = value_loss(v, poison(old, mask), poison(ret, mask), mask, clip)
    e_loss, e_cf = ref_value(rows(v), rows(old), rows(ret), rows(mask), clip)
    assert loss.item() == pytest.approx(e_loss, abs=1e-12)
    assert m["ppo/vf_clipfrac"].item() == pytest.approx(e_cf, abs=1e-12)


def test_ratio_one_gives_minus_mean_advantage():
    gen = torch.Generator().manual_seed(5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    logp = rand(gen, 2, 4) - 2.0
    adv = rand(gen, 2, 4)
    loss, m = policy_loss(logp, logp.clone(), adv, mask, EPS)
    assert loss.item() == pytest.approx(-masked_mean(adv, mask).item(), abs=1e-12)
    assert m["ppo/clipfrac"].item() == 0.0
    assert m["ppo/approx_kl"].item() == 0.0
    assert m["ppo/ratio_mean"].item() == 1.0


def test_clipping_hand_computed():
    # token: ratio, A  ->  pg1=-A*r, pg2=-A*clip(r)  ->  max, clipped branch active?
    # 0: 1.5,  1  -> -1.5, -1.2 -> -1.2, yes
    # 1: 0.5,  1  -> -0.5, -0.8 -> -0.5, no (ratio outside the range, but the unclipped term is the max)
    # 2: 0.5, -2  ->  1.0,  1.6 ->  1.6, yes
    # 3: 1.1, -1  ->  1.1,  1.1 ->  1.1, no (inside the range)
    # 4: padding (ignored)
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.1, 9.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.float64)
    old = torch.full_like(ratio, -1.0)
    logp = (old + ratio.log()).requires_grad_(True)
    loss, m = policy_loss(logp, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.6 + 1.1) / 4, abs=1e-12)
    assert m["ppo/clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp: clipped tokens 0; others -A * ratio / 4
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5 / 4, 0.0, 1.1 / 4, 0.0]], dtype=torch.float64))


def test_value_loss_hand_computed():
    # token 0: v=1.5 old=1.0 R=2.0 -> vclip=1.2; (v-R)^2=0.25, (vclip-R)^2=0.64 -> 0.64, clipped
    # token 1: v=0.9 old=1.0 R=0.0 -> vclip=0.9;  0.81 both -> 0.81, not clipped
    v = torch.tensor([[1.5, 0.9, 3.0]], dtype=torch.float64)
    old = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    ret = torch.tensor([[2.0, 0.0, -3.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.float64)
    loss, m = value_loss(v, old, ret, mask, 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-12)
    assert m["ppo/vf_clipfrac"].item() == pytest.approx(0.5)
    loss0, m0 = value_loss(v, old, ret, mask, 0.0)
    assert loss0.item() == pytest.approx(0.5 * (0.25 + 0.81) / 2, abs=1e-12)
    assert m0["ppo/vf_clipfrac"].item() == 0.0


def _split_batch_case(seed):
    gen = torch.Generator().manual_seed(seed)
    # unequal token counts in the two halves: 2+3=5 vs 7+1=8 tokens
    lens = torch.tensor([2, 3, 7, 1])
    mask = (torch.arange(8).unsqueeze(0) < lens.unsqueeze(1)).to(torch.float64)
    return gen, mask


@pytest.mark.parametrize("seed", SEEDS)
def test_global_normalizer_makes_shards_sum_to_full_batch(seed):
    """What data parallelism relies on: per-rank losses with normalizer = global token count,
    summed (their gradients all-reduced with SUM), equal the single-rank full-batch loss."""
    gen, mask = _split_batch_case(seed)
    old = rand(gen, 4, 8) - 2.0
    adv = rand(gen, 4, 8)
    old_v, ret = rand(gen, 4, 8), rand(gen, 4, 8)
    base_lp = old + rand(gen, 4, 8, scale=0.3)
    base_v = old_v + rand(gen, 4, 8, scale=0.3)
    total = mask.sum()

    def run(rows_, normalizer):
        lp = base_lp.clone().requires_grad_(True)
        v = base_v.clone().requires_grad_(True)
        s = slice(*rows_)
        pl, _ = policy_loss(lp[s], old[s], adv[s], mask[s], EPS, normalizer=normalizer)
        vl, _ = value_loss(v[s], old_v[s], ret[s], mask[s], 0.2, normalizer=normalizer)
        (pl + vl).backward()
        return pl.item(), vl.item(), lp.grad, v.grad

    full_pl, full_vl, full_glp, full_gv = run((0, 4), None)
    a_pl, a_vl, a_glp, a_gv = run((0, 2), total)
    b_pl, b_vl, b_glp, b_gv = run((2, 4), total)
    assert a_pl + b_pl == pytest.approx(full_pl, abs=1e-12)
    assert a_vl + b_vl == pytest.approx(full_vl, abs=1e-12)
    torch.testing.assert_close(a_glp + b_glp, full_glp, rtol=0, atol=1e-12)
    torch.testing.assert_close(a_gv + b_gv, full_gv, rtol=0, atol=1e-12)

    # the naive alternative (per-shard token mean, then averaged over ranks) is NOT equivalent here
    la_pl, _, la_glp, _ = run((0, 2), None)
    lb_pl, _, lb_glp, _ = run((2, 4), None)
    assert abs((la_pl + lb_pl) / 2 - full_pl) > 1e-6
    assert not torch.allclose((la_glp + lb_glp) / 2, full_glp)


def test_losses_ignore_padding_garbage_in_values_and_grads():
    gen = torch.Generator().manual_seed(9)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    lp = poison(rand(gen, 2, 3), mask, float("-inf")).requires_grad_(True)
    old = poison(rand(gen, 2, 3), mask, float("nan"))
    v = poison(rand(gen, 2, 3), mask, float("inf")).requires_grad_(True)
    pl, pm = policy_loss(lp, old, poison(rand(gen, 2, 3), mask), mask, EPS)
    vl, vm = value_loss(v, old, poison(rand(gen, 2, 3), mask, float("-inf")), mask, 0.2)
    (pl + vl).backward()
    assert torch.isfinite(pl) and torch.isfinite(vl)
    assert all(torch.isfinite(x) for x in [*pm.values(), *vm.values()])
    assert torch.isfinite(lp.grad).all() and torch.isfinite(v.grad).all()
    assert torch.all(lp.grad[mask == 0] == 0) and torch.all(v.grad[mask == 0] == 0)


def test_empty_mask_gives_zero_loss():
    z = torch.zeros(2, 3)
    loss, m = policy_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), z, EPS)
    assert loss.item() == 0.0 and m["ppo/clipfrac"].item() == 0.0
    vloss, _ = value_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), z, 0.2)
    assert vloss.item() == 0.0


def ref_entropy(logits_row):
    mx = max(logits_row)
    z = sum(math.exp(v - mx) for v in logits_row)
    return -sum((math.exp(v - mx) / z) * ((v - mx) - math.log(z)) for v in logits_row if v != -math.inf)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
@pytest.mark.parametrize("seed", SEEDS)
def test_entropy_against_loops(scale, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = rand(gen, 2, 3, 11, scale=scale)
    logits[1, 2, :5] = -math.inf  # a truncated distribution
    h = entropy_from_logits(logits)
    assert h.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            assert float(h[b, t]) == pytest.approx(ref_entropy([float(v) for v in logits[b, t]]), abs=1e-9)


def test_entropy_hand_values():
    V = 7
    h = entropy_from_logits(torch.zeros(1, 2, V))
    torch.testing.assert_close(h, torch.full((1, 2), math.log(V)))
    one_hot = torch.tensor([[[1e4, 0.0, 0.0]]])
    assert entropy_from_logits(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy_from_logits(torch.zeros(1, 1, 4, dtype=torch.bfloat16)).dtype == torch.float32


def ref_explained_variance(pred, target, mask):
    y = [t for tr, mr in zip(target, mask) for t, m in zip(tr, mr) if m == 1.0]
    d = [t - p for pr, tr, mr in zip(pred, target, mask) for p, t, m in zip(pr, tr, mr) if m == 1.0]

    def var(xs):
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs) / len(xs)

    return 1.0 - var(d) / var(y)


@pytest.mark.parametrize("shape", [(3, 5), (4, 7), (6, 12)])
@pytest.mark.parametrize("seed", SEEDS)
def test_explained_variance_against_loops(shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    target = rand(gen, B, T)
    pred = target + rand(gen, B, T, scale=0.5)
    got = explained_variance(poison(pred, mask), poison(target, mask), mask)
    expect = ref_explained_variance(rows(pred), rows(target), rows(mask))
    assert got.item() == pytest.approx(expect, abs=1e-10)


def test_explained_variance_hand_values():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    target = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    assert explained_variance(target.clone(), target, mask).item() == 1.0
    assert explained_variance(torch.full_like(target, 2.0), target, mask).item() == pytest.approx(0.0)
    # residual [1, 1, 1] has zero variance: a constant offset is "perfect" for explained variance
    assert explained_variance(target - 1.0, target, mask).item() == pytest.approx(1.0)
    # pred = -target: residual 2*target, var 4x -> 1 - 4 = -3
    assert explained_variance(-target, target, mask).item() == pytest.approx(-3.0)
    assert torch.isnan(explained_variance(target, torch.ones_like(target), mask))
