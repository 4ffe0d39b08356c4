"""Loss aggregation: how per-token loss terms of a minibatch become one scalar (`algo.loss_agg`).

    loss = aggregate(per_token, mask, "token_mean", n_tokens=N)            # PPO's default
    loss = aggregate(per_token, mask, "seq_mean_token_mean", n_seqs=M)
    loss = aggregate(per_token, mask, "token_sum_norm", n_seqs=M, horizon=max_new_tokens)   # Dr. GRPO

Data-parallel trainers pass the GLOBAL minibatch's token count `N` / sequence count `M`: each mode is then
a sum over sequences divided by a global constant, so the per-rank losses (hence gradients) sum to the
single-rank loss of the whole minibatch for any split of its rows over ranks.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from hpc_rlhf.algo.masked import masked_sum

LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "token_sum_norm")
Normalizer = Optional[Union[Tensor, float, int]]


def _normalizer(mask: Tensor, normalizer: Normalizer, like: Tensor) -> Tensor:
    n = mask.to(like.dtype).sum() if normalizer is None else torch.as_tensor(normalizer, dtype=like.dtype)
    return n.to(like.device).clamp(min=1e-8)


def _seq_count(mask: Tensor, n_seqs: Normalizer, like: Tensor) -> Tensor:
    """`n_seqs`, or by default the rows of `mask` with at least one valid token."""
    rows = (mask != 0).any(dim=-1).to(like.dtype).sum() if n_seqs is None else n_seqs
    return _normalizer(mask, rows, like)


def aggregate(
    x: Tensor,
    mask: Tensor,
    mode: str = "token_mean",
    n_tokens: Normalizer = None,
    n_seqs: Normalizer = None,
    horizon: float = 1.0,
) -> Tensor:
    """One scalar from per-token terms `x`, masked.

    Args:
        x: `(B, T)` per-token loss terms (with grad); masked-out entries are never read.
        mask: `(B, T)` loss mask (the response mask, possibly with whole rows zeroed).
        mode: `"token_mean"`: `sum_{b,t} x / n_tokens` (default n_tokens = `mask.sum()`);
            `"seq_mean_token_mean"`: `sum_b (sum_t x[b] / len_b) / n_seqs` (a row with no valid token
            adds 0); `"token_sum_norm"`: `sum_{b,t} x / (horizon * n_seqs)`
            (default n_seqs = rows with a valid token).
        n_tokens: token count of the global minibatch (token_mean).
        n_seqs: sequence count of the global minibatch (the other two modes).
        horizon: token_sum_norm's constant per sequence (e.g. generate.max_new_tokens).

    Returns:
        0-dim tensor in `x`'s dtype.

    Raises:
        ValueError: on an unknown mode.
    """
    if mode == "token_mean":
        return masked_sum(x, mask) / _normalizer(mask, n_tokens, x)
    if mode == "seq_mean_token_mean":
        per_seq = masked_sum(x, mask, dim=-1) / mask.to(x.dtype).sum(dim=-1).clamp(min=1.0)
        return per_seq.sum() / _seq_count(mask, n_seqs, x)
    if mode == "token_sum_norm":
        return masked_sum(x, mask) / (_seq_count(mask, n_seqs, x) * float(horizon))
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(LOSS_AGGS)}")
