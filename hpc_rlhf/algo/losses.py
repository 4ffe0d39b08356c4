"""PPO losses (clipped policy and value), the entropy of a categorical, explained variance."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from hpc_rlhf.algo.aggregate import Normalizer, _normalizer, aggregate
from hpc_rlhf.algo.masked import masked_mean, masked_sum, masked_var
from hpc_rlhf.algo.registry import register_policy_loss


@register_policy_loss("ppo_clip")
def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_ratio: float,
    normalizer: Normalizer = None,
    loss_agg: str = "token_mean",
    n_seqs: Normalizer = None,
    horizon: float = 1.0,
    clip_high: Optional[float] = None,
    dual_clip: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss, token level (also the critic-free algorithms' policy loss).

    `ratio = exp(logp - old_logp)`; per token `pg = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps_high))`,
    then `pg = min(pg, -A * c)` where `A < 0` with `dual_clip = c > 1` (Ye et al. 2020);
    `loss = masked_sum(pg, mask) / normalizer` (loss_agg="token_mean"; other modes: `algo.aggregate`).

    Args:
        logp: `(B, T)` log-probs of the taken tokens under the policy being trained (with grad).
        old_logp: `(B, T)` log-probs of the same tokens under the behaviour policy (no grad needed).
        advantages: `(B, T)` advantages (already whitened if wanted).
        mask: `(B, T)` response mask (1 on real response tokens, right-padded).
        clip_ratio: epsilon, the lower clip (`1 - eps`), and the upper one unless `clip_high` is given.
        normalizer: what the masked sum is divided by; default `mask.sum()` (the token-level mean of
            this batch). Data-parallel trainers pass the token count of the GLOBAL minibatch, so that
            summing (all-reducing) the per-rank gradients gives exactly the single-rank loss's gradient.
        loss_agg, n_seqs, horizon: the aggregation of the per-token terms (`aggregate`; `normalizer` is
            its `n_tokens`).
        clip_high, dual_clip: `eps_high` (DAPO's clip-higher; None = `clip_ratio`); `c` (0 = off).

    Returns:
        `(loss, metrics)`: loss is a 0-dim tensor with grad; metrics are detached 0-dim tensors,
        masked means over this call's `mask` (not divided by `normalizer`):
        `"ppo/clipfrac"` (fraction of tokens where the clipped branch is the active max),
        `"ppo/approx_kl"` (mean of `0.5 * (logp - old_logp)^2`, as TRL), `"ppo/ratio_mean"`, `"ppo/dual_clipfrac"`.
    """
    valid = mask != 0
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    log_ratio = torch.where(valid, logp - old_logp, zero)
    adv = torch.where(valid, advantages.to(logp.dtype), zero)
    ratio = torch.exp(log_ratio)
    pg1 = -adv * ratio
    high = clip_ratio if clip_high is None else clip_high
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + high)
    pg = torch.maximum(pg1, pg2)
    if dual_clip > 0:
        pg3 = -adv * dual_clip
        dual = (adv < 0) & (pg3 < pg)
        pg = torch.where(dual, pg3, pg)
    loss = aggregate(pg, mask, loss_agg, normalizer, n_seqs, horizon)
    with torch.no_grad():
        metrics = {
            "ppo/clipfrac": masked_mean((pg2 > pg1).to(pg.dtype), mask),
            "ppo/approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ppo/ratio_mean": masked_mean(ratio, mask),
            **({"ppo/dual_clipfrac": masked_mean(dual.to(pg.dtype), mask)} if dual_clip > 0 else {}),
        }
    return loss, metrics


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float,
    normalizer: Normalizer = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO value loss, clipped around the old values when `clip > 0`.

    `clip > 0`: `vclipped = old + clamp(v - old, -clip, clip)`;
    `loss = 0.5 * masked_sum(max((v - R)^2, (vclipped - R)^2)) / normalizer`.
    `clip == 0`: `loss = 0.5 * masked_sum((v - R)^2) / normalizer`.

    Args:
        values: `(B, T)` value predictions of the model being trained (with grad).
        old_values: `(B, T)` behaviour-time value predictions (the ones GAE used).
        returns: `(B, T)` GAE returns (targets).
        mask: `(B, T)` response mask (1 on real response tokens, right-padded).
        clip: value clip range; 0 = unclipped.
        normalizer: as in `policy_loss` (default `mask.sum()`).

    Returns:
        `(loss, metrics)`: loss 0-dim with grad; metrics `"ppo/vf_clipfrac"` (detached masked mean of
        the tokens where the clipped branch is the active max; 0 when `clip == 0`).
    """
    valid = mask != 0
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(valid, values, zero)
    old = torch.where(valid, old_values.to(values.dtype), zero)
    ret = torch.where(valid, returns.to(values.dtype), zero)
    sq = (v - ret) ** 2
    if clip > 0:
        v_clipped = old + torch.clamp(v - old, -clip, clip)
        sq_clipped = (v_clipped - ret) ** 2
        per_token = torch.maximum(sq, sq_clipped)
        clipped = (sq_clipped > sq).to(values.dtype)
    else:
        per_token = sq
        clipped = torch.zeros_like(sq)
    loss = 0.5 * masked_sum(per_token, mask) / _normalizer(mask, normalizer, per_token)
    with torch.no_grad():
        metrics = {"ppo/vf_clipfrac": masked_mean(clipped, mask)}
    return loss, metrics


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position.

    `H = logsumexp(l) - sum(softmax(l) * l)` over the last dimension (stable for large logits;
    `-inf` logits are allowed and contribute 0). Half-precision logits are computed in float32.

    Args:
        logits: `(B, T, V)` (any leading shape) unnormalised logits (already divided by the temperature).

    Returns:
        `(B, T)` entropies in nats (float32 for half inputs, else `logits`' dtype).
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    finite = logits.clamp(min=torch.finfo(logits.dtype).min)  # -inf * 0 would be nan
    return torch.logsumexp(logits, dim=-1) - (probs * finite).sum(dim=-1)


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """`1 - Var(target - pred) / Var(target)` over the masked entries (a diagnostic of the value model).

    Args:
        pred: `(B, T)` value predictions.
        target: `(B, T)` returns.
        mask: `(B, T)` response mask.

    Returns:
        Detached 0-dim tensor: 1 = perfect, 0 = no better than a constant, negative = worse;
        nan when `target` has zero variance over the mask (or the mask is empty).
    """
    with torch.no_grad():
        var_target = masked_var(target, mask, unbiased=False)
        var_resid = masked_var(target - pred, mask, unbiased=False)
        nan = torch.full_like(var_target, float("nan"))
        return torch.where(var_target > 0, 1.0 - var_resid / var_target.clamp(min=1e-30), nan)
