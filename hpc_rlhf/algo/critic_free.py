"""Advantages without a value model: GRPO, RLOO (outcome rewards, a baseline from the prompt's group)
and REINFORCE++ (per-token rewards, reward-to-go, batch whitening).

    adv = grpo_advantages(reward, groups, mask, scale_by_std=True)   # (B, T)
    adv = rloo_advantages(reward, groups, mask)                      # (B, T)
    adv, ret = reinforce_pp_advantages(token_rewards, mask, gamma)   # (B, T) each
    uniform, n = uniform_groups(score, groups)                       # (B,) bool, int

A *group* is the set of samples that share a key of `groups` (`(B,)` integers: the prompt index of
each sample of a step); group sizes may differ. Group statistics are computed in float64 with a
one-hot matrix product (no atomics: the same on every device and every call), then cast back.
Outcome advantages are per sample, broadcast over its response tokens and exactly 0 on padding.
See docs/algorithms.md for each choice and the papers and code it agrees with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hpc_rlhf.algo.masked import masked_whiten


def _group_stats(x: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: its group's mean, unbiased std (0 for a group of one) and size; `(B,)` float64 each."""
    keys, inverse = torch.unique(groups, return_inverse=True)
    onehot = (inverse.unsqueeze(0) == torch.arange(len(keys), device=x.device).unsqueeze(1)).double()  # (G, B)
    x = x.double()
    n = onehot.sum(dim=1)
    mean = (onehot @ x) / n
    dev = x - mean[inverse]
    var = torch.where(n > 1, (onehot @ (dev * dev)) / (n - 1).clamp(min=1.0), torch.zeros_like(n))
    return mean[inverse], var.sqrt()[inverse], n[inverse]


def _broadcast(per_sample: Tensor, mask: Tensor) -> Tensor:
    """`(B,)` -> `(B, T)`: the value on every valid token of its row, exactly 0 elsewhere."""
    zero = torch.zeros((), dtype=per_sample.dtype, device=mask.device)
    return torch.where(mask != 0, per_sample.unsqueeze(-1), zero)


def grpo_advantages(
    rewards: Tensor, groups: Tensor, mask: Tensor, scale_by_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO outcome advantages (DeepSeekMath): `A_i = (r_i - mean_g) / (std_g + eps)`, or `r_i - mean_g`
    with `scale_by_std=False` (Dr. GRPO). `std_g` is the unbiased std of the group (0 for a group of one,
    whose advantage is then 0).

    Args:
        rewards: `(B,)` sequence rewards.
        groups: `(B,)` integer group keys (the prompt index of each sample).
        mask: `(B, T)` response mask.
        scale_by_std: divide by the group's std.
        eps: added to the std.

    Returns:
        `(B, T)` advantages in `rewards`' dtype (float32 at least), 0 at masked-out positions.
    """
    mean, std, _ = _group_stats(rewards, groups)
    adv = rewards.double() - mean
    if scale_by_std:
        adv = adv / (std + eps)
    return _broadcast(adv.to(torch.promote_types(rewards.dtype, torch.float32)), mask)


def rloo_advantages(rewards: Tensor, groups: Tensor, mask: Tensor) -> Tensor:
    """RLOO outcome advantages (Ahmadian et al. 2024): `A_i = r_i - mean of the OTHER rewards of i's group`
    `= r_i - (sum_g - r_i) / (n_g - 1)`; 0 for a group of one (no other sample to compare with).

    Args:
        rewards: `(B,)` sequence rewards.
        groups: `(B,)` integer group keys.
        mask: `(B, T)` response mask.

    Returns:
        `(B, T)` advantages in `rewards`' dtype (float32 at least), 0 at masked-out positions.
    """
    mean, _, n = _group_stats(rewards, groups)
    r = rewards.double()
    baseline = (mean * n - r) / (n - 1).clamp(min=1.0)
    adv = torch.where(n > 1, r - baseline, torch.zeros_like(r))
    return _broadcast(adv.to(torch.promote_types(rewards.dtype, torch.float32)), mask)


def reward_to_go(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Discounted reward-to-go over each row's valid tokens: `G_t = r_t + gamma * G_{t+1}`, `G = 0` past
    the last valid token. One reversed loop over T, vectorised over B.

    Args:
        rewards: `(B, T)` per-token rewards (see `token_rewards`); masked-out entries are never read.
        mask: `(B, T)` response mask (right-padded).
        gamma: discount.

    Returns:
        `(B, T)` returns (float32 at least), exactly 0 at masked-out positions.
    """
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    valid = mask != 0
    r = torch.where(valid, rewards.to(dtype), torch.zeros((), dtype=dtype, device=rewards.device))
    out = torch.zeros_like(r)
    running = torch.zeros(r.shape[0], dtype=dtype, device=r.device)
    for t in reversed(range(r.shape[1])):
        running = torch.where(valid[:, t], r[:, t] + gamma * running, torch.zeros_like(running))
        out[:, t] = running
    return out


def reinforce_pp_advantages(rewards: Tensor, mask: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025): returns = reward-to-go of the per-token rewards (KL penalty on every token,
    score on the last), advantages = those returns whitened over all valid tokens of the batch.

    Args:
        rewards: `(B, T)` per-token rewards.
        mask: `(B, T)` response mask.
        gamma: discount.

    Returns:
        `(advantages, returns)`, both `(B, T)`, 0 at masked-out positions.
    """
    returns = reward_to_go(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


def uniform_groups(scores: Tensor, groups: Tensor) -> tuple[Tensor, int]:
    """Samples whose group's scores are all equal (a group of one counts as uniform).

    Args:
        scores: `(B,)` sequence scores.
        groups: `(B,)` integer group keys.

    Returns:
        `(uniform, n_groups)`: `(B,)` bool, True for every sample of a uniform group; the number of
        uniform groups.
    """
    keys, inverse = torch.unique(groups, return_inverse=True)
    s = scores.double()
    hi = torch.full((len(keys),), -torch.inf, dtype=s.dtype, device=s.device).scatter_reduce(0, inverse, s, "amax")
    lo = torch.full((len(keys),), torch.inf, dtype=s.dtype, device=s.device).scatter_reduce(0, inverse, s, "amin")
    same = hi == lo
    return same[inverse], int(same.sum())
