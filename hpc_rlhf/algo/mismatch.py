"""The sampler-trainer mismatch: truncated importance sampling (TIS) and its metrics.

    w = tis_weights(old_logp, sampler_logp, mask, cap)      # (B, T), no grad; multiplies the policy loss
    m = mismatch_metrics(old_logp, sampler_logp, mask, cap) # mismatch/kl, ratio_mean, ratio_max, capped_frac

A fast sampler (vLLM) draws the tokens with log-probs `sampler_logp` that differ from the training
forward's `old_logp` for the same weights (other kernels, other precision). The policy-gradient
estimate is then off-policy; TIS (Yao et al. 2025, "Your efficient RL framework secretly brings you
off-policy RL training") weights each token's policy loss by `min(pi_old / pi_sampler, cap)`, a
detached factor. Token tensors are `(B, T)` with a right-padded response mask (algo/masked.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hpc_rlhf.algo.masked import masked_mean


def tis_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Per-token `min(exp(old_logp - sampler_logp), cap)`, detached, 0 where `mask` is 0.

    Args:
        old_logp: `(B, T)` the behaviour policy's log-probs by the training forward (recomputed).
        sampler_logp: `(B, T)` the sampler's log-probs of the same tokens (the shard's gen_logprobs).
        mask: `(B, T)` response mask.
        cap: C >= 1, the truncation.
    """
    valid = mask != 0
    with torch.no_grad():
        log_ratio = torch.where(valid, old_logp.float() - sampler_logp.float(), torch.zeros((), device=mask.device))
        w = torch.exp(log_ratio).clamp(max=cap)
        return torch.where(valid, w, torch.zeros_like(w))


def mismatch_metrics(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float = 0.0) -> dict[str, Tensor]:
    """Detached 0-dim metrics of the mismatch over the masked tokens (r = pi_old / pi_sampler):

    `mismatch/kl`: KL(sampler || trainer) estimated on the sampler's tokens with k3, mean of r - 1 - log r;
    `mismatch/k1`: mean of log pi_sampler - log pi_old; `mismatch/ratio_mean`, `mismatch/ratio_max`:
    of r; `mismatch/capped_frac`: share of tokens with r > cap (0 when cap = 0, TIS off)."""
    valid = mask != 0
    with torch.no_grad():
        zero = torch.zeros((), device=mask.device)
        log_r = torch.where(valid, old_logp.float() - sampler_logp.float(), zero)
        r = torch.exp(log_r)
        fmask = valid.float()
        neg = torch.full_like(r, float("-inf"))
        return {
            "mismatch/kl": masked_mean(r - 1 - log_r, fmask),
            "mismatch/k1": masked_mean(-log_r, fmask),
            "mismatch/ratio_mean": masked_mean(r, fmask),
            "mismatch/ratio_max": torch.where(valid, r, neg).max() if bool(valid.any()) else zero,
            "mismatch/capped_frac": masked_mean((r > cap).float(), fmask) if cap > 0 else zero,
        }


def behavior_logprobs(mode: str, sampler_logp: Tensor, recomputed: Tensor | None) -> Tensor:
    """The old policy's log-probs the ratio uses (algo.behavior_logprobs): `sampler` = the shard's,
    `recompute` = the training forward's (`recomputed`, required then)."""
    if mode == "sampler":
        return sampler_logp
    if recomputed is None:
        raise ValueError("algo.behavior_logprobs=recompute needs the recomputed log-probs")
    return recomputed
