"""Token-budget micro-batches: a rank's share of a minibatch cut into rows of similar length.

    parts = micro_batches(sd.batch, rows, budget)    # [(Batch, rows)], each trimmed to its own longest row
    out = accumulate(parts, objective, weight)       # backward on each part; (summed loss, merged metrics)

`train.max_tokens_per_microbatch = N > 0`: the rows are sorted by length (longest first, ties by row)
and packed greedily while `rows x (longest prompt + longest response)` stays within N; a row longer
than N goes alone. Each part is laid out on its own columns (models/forward.py's layout, cut to the
part's longest prompt and response), so the padding of the minibatch's longest row is never computed.
The loss normalisers are the global minibatch's (roles/trainer_step.Norms), so the per-part losses add
up to the share's loss and their gradients, accumulated by one backward each, to its gradient: the
update is the padded one up to float order. `N = 0` is one part, the share padded as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpc_rlhf.models.forward import Batch

SUMMED = ("algo/kl_loss",)
"""Metrics already divided by the global normalisers (they add over parts); the rest are means over a part's tokens."""


def trimmed(batch: Batch, rows: torch.Tensor) -> Batch:
    """`batch`'s `rows`, cut to their own longest prompt (left) and longest response (right)."""
    p = batch.prompt_width
    am = batch.attention_mask[rows]
    p_len = int(am[:, :p].sum(-1).max())
    r = max(1, int(batch.response_mask[rows].sum(-1).max()))
    cols = slice(p - p_len, p + r)
    return Batch(
        batch.input_ids[rows][:, cols],
        am[:, cols],
        batch.position_ids[rows][:, cols],
        batch.response_mask[rows][:, :r],
        p_len,
        r,
    )


def micro_batches(batch: Batch, rows: torch.Tensor, budget: int) -> list[tuple[Batch, torch.Tensor]]:
    """`rows` of `batch` as micro-batches of at most `budget` tokens each (0 = one part, untrimmed)."""
    if budget <= 0 or len(rows) == 0:
        return [(batch.select(rows), rows)]
    p = batch.prompt_width
    p_len = batch.attention_mask[rows][:, :p].sum(-1).tolist()
    r_len = batch.response_mask[rows].sum(-1).long().tolist()
    order = sorted(range(len(rows)), key=lambda i: (-(p_len[i] + r_len[i]), i))
    groups: list[list[int]] = []
    wp = wr = 0  # the open group's longest prompt and response
    for i in order:
        np_, nr = max(wp, p_len[i]), max(wr, r_len[i], 1)
        if groups and (len(groups[-1]) + 1) * (np_ + nr) <= budget:
            groups[-1].append(i)
            wp, wr = np_, nr
        else:
            groups.append([i])
            wp, wr = p_len[i], max(r_len[i], 1)
    out = []
    for g in groups:
        sub = rows[torch.as_tensor(sorted(g), device=rows.device)]
        out.append((trimmed(batch, sub), sub))
    return out


def accumulate(
    parts: list[tuple[Batch, torch.Tensor]],
    objective: Callable[[Batch, torch.Tensor], tuple[torch.Tensor, dict]],
    weight: Callable[[Batch, torch.Tensor], float],
) -> tuple[float, dict[str, float]]:
    """Run `objective(part, rows) -> (loss, metrics)` and its backward on each part (the gradients
    add up in `.grad`). Returns the summed loss and the metrics: SUMMED ones added, the others
    averaged with `weight(part, rows)` (the part's token count of the mask they are means over)."""
    if len(parts) == 1:  # the untouched path: no reweighting at all
        loss, m = objective(*parts[0])
        loss.backward()
        return float(loss.detach()), {k: float(v) for k, v in m.items()}
    total, sums, weights = 0.0, {}, {}
    for mb, rows in parts:
        loss, m = objective(mb, rows)
        loss.backward()
        total += float(loss.detach())
        w = weight(mb, rows)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v) * (1.0 if k in SUMMED else w)
            weights[k] = weights.get(k, 0.0) + w
    return total, {k: v if k in SUMMED else v / max(weights[k], 1e-12) for k, v in sums.items()}
