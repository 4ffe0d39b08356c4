"""Masked reductions over padded token tensors.

Conventions used throughout `hpc_rlhf.algo`:

* token tensors are `(B, T)`: B sequences, T response positions;
* the *response mask* is `(B, T)`, 1 on real response tokens and 0 on padding, right-padded
  (each row is ones then zeros; a row may be all zeros or all ones);
* values at masked-out positions are never read: they may hold anything, even inf or nan,
  without changing a result or a gradient.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

Dim = Optional[Union[int, tuple[int, ...]]]


def _clean(x: Tensor, mask: Tensor) -> Tensor:
    """`x` with masked-out entries replaced by exactly 0 (so inf/nan padding reaches neither values nor grads)."""
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """Sum of `x * mask`.

    Args:
        x: any shape, e.g. `(B, T)`.
        mask: same shape as `x` (or broadcastable to it); 1 = counted, 0 = ignored.
        dim: dimension(s) to reduce; None reduces everything to a scalar.

    Returns:
        The sum over `dim` (a 0-dim tensor when `dim` is None). Masked-out entries contribute 0.
    """
    y = _clean(x, mask) * mask
    return y.sum() if dim is None else y.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: Dim = None) -> Tensor:
    """Mean of `x` over the entries where `mask` is 1: `sum(x * mask) / sum(mask)`.

    Args:
        x: any shape, e.g. `(B, T)`.
        mask: same shape as `x` (or broadcastable to it).
        dim: dimension(s) to reduce; None gives a scalar over all masked entries.

    Returns:
        The masked mean over `dim`; 0 where the mask is empty (the denominator is clamped at 1e-8).
    """
    count = mask.to(x.dtype).expand_as(x)
    count = count.sum() if dim is None else count.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1e-8)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over all masked entries (a scalar), as TRL's `masked_var`.

    Args:
        x: any shape, e.g. `(B, T)`.
        mask: same shape as `x`.
        unbiased: apply Bessel's correction `n / (n - 1)`, n = number of masked entries.

    Returns:
        0-dim tensor. With n <= 1 the correction is skipped (TRL raises or returns nan there),
        so an empty or single-entry mask gives 0.
    """
    x = _clean(x, mask)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).expand_as(x).sum()
        bessel = torch.where(n > 1, n / (n - 1).clamp(min=1e-8), torch.ones_like(n))
        var = var * bessel
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise `x` to zero mean and unit variance using statistics of its masked entries.

    `(x - mean) * rsqrt(var + eps)`, mean and (unbiased) variance over all masked entries of the
    whole tensor; with `shift_mean=False` the mean is added back (only the scale changes), as TRL.

    Args:
        x: `(B, T)` (any shape).
        mask: same shape as `x`, the response mask.
        shift_mean: keep the result centred at 0 (True) or at the original mean (False).
        eps: added to the variance before the reciprocal square root.

    Returns:
        Tensor shaped like `x`; exactly 0 at masked-out positions.
    """
    x = _clean(x, mask)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    white = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        white = white + mean
    return _clean(white, mask)
