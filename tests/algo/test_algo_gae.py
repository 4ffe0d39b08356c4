import pytest
import torch
from algo_helpers import SEEDS, SHAPES, batch, lengths, poison, rand, rows

from hpc_rlhf.algo import gae


def ref_gae(rewards, values, lens, gamma, lam):
    """Row by row, token by token, in Python floats."""
    advs, rets = [], []
    for r, v, n in zip(rewards, values, lens):
        T = len(r)
        adv = [0.0] * T
        last = 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            delta = r[t] + gamma * next_v - v[t]
            last = delta + gamma * lam * last
            adv[t] = last
        advs.append(adv)
        rets.append([adv[t] + v[t] if t < n else 0.0 for t in range(T)])
    return advs, rets


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gae_against_loops(gamma, lam, shape, seed):
    B, T = shape
    gen, mask = batch(B, T, seed)
    rewards, values = rand(gen, B, T), rand(gen, B, T)
    adv, ret = gae(poison(rewards, mask), poison(values, mask, float("inf")), mask, gamma, lam)
    exp_adv, exp_ret = ref_gae(rows(rewards), rows(values), lengths(mask), gamma, lam)
    assert adv.shape == ret.shape == (B, T)
    for b in range(B):
        for t in range(T):
            assert float(adv[b, t]) == pytest.approx(exp_adv[b][t], abs=1e-10)
            assert float(ret[b, t]) == pytest.approx(exp_ret[b][t], abs=1e-10)


def test_gamma_lam_one_gives_reward_to_go():
    gen = torch.Generator().manual_seed(11)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.float64)
    rewards = rand(gen, 3, 6) * mask
    values = rand(gen, 3, 6) * mask
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    reward_to_go = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1]) * mask
    torch.testing.assert_close(ret, reward_to_go)
    torch.testing.assert_close(adv, (reward_to_go - values) * mask)


def test_hand_computed():
    # one row of length 2 in T=3, gamma=0.5, lam=0.5
    # delta1 = r1 + 0 - v1 = 1 - 2 = -1          ; A1 = -1
    # delta0 = r0 + 0.5*v1 - v0 = 0 + 1 - 1 = 0  ; A0 = 0 + 0.25*(-1) = -0.25
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    values = torch.tensor([[1.0, 2.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, 0.5, 0.5)
    assert adv.tolist() == [[-0.25, -1.0, 0.0]]
    assert ret.tolist() == [[0.75, 1.0, 0.0]]


def test_no_bootstrap_past_the_last_token_and_padding_ignored():
    # the value at the padded position (100) must not be bootstrapped into the last valid token
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    a1, _ = gae(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 100.0]]), mask, 1.0, 0.95)
    assert a1[0, 1].item() == 1.0
    assert a1[0, 2].item() == 0.0


def test_half_precision_inputs_are_accumulated_in_float32():
    mask = torch.ones(2, 4)
    adv, ret = gae(torch.ones(2, 4, dtype=torch.bfloat16), torch.zeros(2, 4, dtype=torch.bfloat16), mask, 1.0, 1.0)
    assert adv.dtype == torch.float32 and ret.dtype == torch.float32
    assert ret[0].tolist() == [4.0, 3.0, 2.0, 1.0]
