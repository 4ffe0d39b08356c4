import math

import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, poison, rand, rows

from hpc_rlhf.algo import masked_mean, masked_sum, masked_var, masked_whiten


def ref_entries(x, mask):
    return [v for xr, mr in zip(rows(x), rows(mask)) for v, m in zip(xr, mr) if m == 1.0]


def ref_mean(vals):
    return sum(vals) / len(vals) if vals else 0.0


def ref_var(vals, unbiased):
    n = len(vals)
    if n == 0:
        return 0.0
    mu = ref_mean(vals)
    var = sum((v - mu) ** 2 for v in vals) / n
    return var * n / (n - 1) if unbiased and n > 1 else var


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_against_loops(shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    x = rand(gen, B, T, scale=3.0) + 1.5
    xp = poison(x, mask, float("inf"))
    vals = ref_entries(x, mask)

    assert masked_sum(xp, mask).item() == pytest.approx(sum(vals), abs=1e-12)
    assert masked_mean(xp, mask).item() == pytest.approx(ref_mean(vals), abs=1e-12)
    for unbiased in (True, False):
        assert masked_var(xp, mask, unbiased=unbiased).item() == pytest.approx(ref_var(vals, unbiased), abs=1e-10)

    # per-row reductions (dim=1), empty rows give 0
    row_sums = masked_sum(xp, mask, dim=1)
    row_means = masked_mean(xp, mask, dim=1)
    for b, (xr, mr) in enumerate(zip(rows(x), rows(mask))):
        rv = [v for v, m in zip(xr, mr) if m == 1.0]
        assert row_sums[b].item() == pytest.approx(sum(rv), abs=1e-12)
        assert row_means[b].item() == pytest.approx(ref_mean(rv), abs=1e-12)

    for shift_mean in (True, False):
        w = masked_whiten(xp, mask, shift_mean=shift_mean)
        mu, var = ref_mean(vals), ref_var(vals, True)
        for b in range(B):
            for t in range(T):
                if mask[b, t] == 1.0:
                    expect = (float(x[b, t]) - mu) / math.sqrt(var + 1e-8) + (0.0 if shift_mean else mu)
                else:
                    expect = 0.0
                assert float(w[b, t]) == pytest.approx(expect, abs=1e-9)


def test_whiten_statistics_and_zero_padding():
    gen = torch.Generator().manual_seed(7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    x = rand(gen, 3, 5, scale=4.0) + 10.0
    w = masked_whiten(poison(x, mask), mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-9)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[mask == 0] == 0)
    w2 = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(w2, mask).item() == pytest.approx(masked_mean(x, mask).item(), abs=1e-9)
    assert masked_var(w2, mask).item() == pytest.approx(1.0, abs=1e-6)


def test_hand_values():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_sum(x, mask).item() == 6.0
    assert masked_mean(x, mask).item() == 2.0
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # ((1-2)^2 + 0 + (3-2)^2) / 2
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2.0 / 3.0)
    assert masked_mean(x, mask, dim=1).tolist() == [1.5, 3.0]


def test_empty_and_single_entry_masks_are_finite():
    x = torch.tensor([[5.0, 7.0]])
    empty = torch.zeros(1, 2)
    assert masked_mean(x, empty).item() == 0.0
    assert masked_var(x, empty).item() == 0.0
    assert torch.all(masked_whiten(x, empty) == 0)
    one = torch.tensor([[1.0, 0.0]])
    assert masked_mean(x, one).item() == 5.0
    assert masked_var(x, one).item() == 0.0
    assert torch.isfinite(masked_whiten(x, one)).all()


def test_padding_garbage_does_not_reach_gradients():
    gen = torch.Generator().manual_seed(3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    x = poison(rand(gen, 2, 3), mask, float("inf")).requires_grad_(True)
    (masked_mean(x, mask) + masked_var(x, mask) + masked_whiten(x, mask).pow(2).sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[mask == 0] == 0)
