"""Generalised advantage estimation (Schulman et al. 2016) over padded response tokens."""

from __future__ import annotations

import torch
from torch import Tensor


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns for a batch of right-padded responses.

    For each valid token t of a row (next-token validity m[t+1], 0 past the end of the row):
        delta[t] = r[t] + gamma * V[t+1] * m[t+1] - V[t]
        A[t]     = delta[t] + gamma * lam * m[t+1] * A[t+1]
    so the value bootstrapped after the last valid token is 0 (the response is a finished episode).
    Vectorised over B; one reversed Python loop over T.

    Args:
        rewards: `(B, T)` per-token rewards (see `token_rewards`).
        values: `(B, T)` value estimates of the behaviour-time (old) value model.
        mask: `(B, T)` response mask (1 on real response tokens, right-padded).
        gamma: discount.
        lam: GAE lambda.

    Returns:
        `(advantages, returns)`, both `(B, T)`, `returns = advantages + values`; both exactly 0 at
        masked-out positions. Computed in float32 at least (float64 inputs stay float64).
        Not whitened: whitening, if any, is the caller's, after the returns are taken.
    """
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, values.dtype), torch.float32)
    valid = mask != 0
    zero = torch.zeros((), dtype=dtype, device=rewards.device)
    r = torch.where(valid, rewards.to(dtype), zero)
    v = torch.where(valid, values.to(dtype), zero)
    m = valid.to(dtype)
    B, T = r.shape
    out: list[Tensor] = []
    next_adv = torch.zeros(B, dtype=dtype, device=r.device)
    next_value = torch.zeros(B, dtype=dtype, device=r.device)
    next_valid = torch.zeros(B, dtype=dtype, device=r.device)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value * next_valid - v[:, t]
        a = (delta + gamma * lam * next_valid * next_adv) * m[:, t]
        out.append(a)
        next_adv, next_value, next_valid = a, v[:, t], m[:, t]
    adv = torch.stack(out[::-1], dim=1) if out else torch.zeros_like(r)
    returns = (adv + v) * m
    return adv, returns
