"""Pick samples of an archive and render their prompt and response as text (the `show` command).

    samples = select(arc, version=40, top=5)        # list of dicts with tokens, reward, KL, location
    samples = select(arc, group=(12, 345))          # every sample of group 345 of step 12, by sample index
    print(render(arc, samples))                     # decoded with RUN_DIR/tokenizer, else token ids

Two passes for --top/--bottom: per-sample rewards first, then only the shards holding the chosen rows.
Each sample's head line lists its per-source rewards (`reward/NAME`) when its shard has them; a
group's samples follow one line with the group's reward mean, std (ddof=0) and whether all are equal.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive.store import SOURCE_PREFIX, Archive, Filters, source_field
from hpc_rlhf.archive.text import decode, load_tokenizer
from hpc_rlhf.errors import UserError

SHOW_FIELDS = [
    "policy_version",
    "step",
    "prompt_index",
    "sample_index",
    "group_id",
    "reward",
    "kl_seq",
    "response_len",
    "eos",
    "shard_id",
    "row",
    "prompt_tokens",
    "response_tokens",
]


def select(
    arc: Archive,
    *,
    version: Optional[int] = None,
    prompt: Any = None,
    top: Optional[int] = None,
    bottom: Optional[int] = None,
    limit: int = 5,
    rewards: Any = None,
    group: Optional[tuple[int, int]] = None,
) -> list[dict[str, Any]]:
    """Samples matching the filters: the `top`/`bottom` K by reward; with `group` = (step, group_id),
    every sample of that group by sample index; else the first `limit` in archive order."""
    if top is not None and bottom is not None:
        raise UserError("give --top or --bottom, not both")
    if group is not None and (top is not None or bottom is not None):
        raise UserError("--group shows a whole group: give it without --top/--bottom")
    fields = [*SHOW_FIELDS, *(source_field(n) for n in arc.reward_sources())]
    filt = Filters(versions=version, prompts=prompt, rewards=rewards, steps=None if group is None else group[0])
    if group is not None:
        found = [s for b in arc.iter_batches(fields, filters=filt) for s in b.samples() if s["group_id"] == group[1]]
        return sorted(found, key=lambda s: s["sample_index"])
    k = top if top is not None else bottom
    if k is None:
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        for b in arc.iter_batches(fields, filters=filt):
            for s in b.samples():
                out.append(s)
                if len(out) >= limit:
                    return out
        return out
    t = arc.table(["reward", "shard_id", "row"], filters=filt)
    r = t["reward"].astype(np.float64)
    ok = np.flatnonzero(~np.isnan(r))
    order = ok[np.argsort(-r[ok] if top is not None else r[ok], kind="stable")][: max(k, 0)]
    want = {(int(t["shard_id"][i]), int(t["row"][i])): rank for rank, i in enumerate(order)}
    found: list[tuple[int, dict[str, Any]]] = []
    for b in arc.iter_batches(fields, shard_ids={s for s, _ in want}):
        rows = b.columns["row"]
        for j in np.flatnonzero(np.isin(rows, [r_ for (s, r_) in want if s == b.shard_id])):
            s = {name: v[j].item() for name, v in b.columns.items()}
            for name in b.ragged:
                s[name] = b.row(int(j), name)
            found.append((want[(b.shard_id, int(rows[j]))], s))
    return [s for _rank, s in sorted(found, key=lambda x: x[0])]


def _num(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, fmt)


def render(
    arc: Archive,
    samples: list[dict[str, Any]],
    tokenizer_path: Optional[str] = None,
    group: Optional[tuple[int, int]] = None,
) -> str:
    """Human-readable text of the samples (after one line on `group`, when given); token ids when the
    run has no (loadable) tokenizer."""
    tok = load_tokenizer(tokenizer_path or arc.tokenizer_path(), arc.on_warning) if samples else None
    if samples and tok is None and not (tokenizer_path or arc.tokenizer_path()):
        arc.on_warning(f"no tokenizer folder under '{arc.path}'; showing token ids")
    label = "" if tok is not None else " (ids)"
    blocks = []
    for s in samples:
        ref = arc.shards[s["shard_id"]]
        where = os.path.relpath(ref.path, arc.root)
        head = (
            f"=== version {s['policy_version']}  step {s['step']}  prompt {s['prompt_index']}"
            f"  sample {s['sample_index']}  reward {_num(s['reward'])}  kl {_num(s['kl_seq'])}"
            f"  len {s['response_len']}  eos {'yes' if s['eos'] else 'no'}{_sources(s)}  [{where} row {s['row']}]"
        )
        blocks.append(
            f"{head}\nprompt{label}:   {decode(tok, s['prompt_tokens'])}\n"
            f"response{label}: {decode(tok, s['response_tokens'])}"
        )
    if not blocks:
        return "(no samples match)"
    if group is not None:
        blocks.insert(0, group_line(group, samples))
    return "\n\n".join(blocks)


def _sources(s: dict[str, Any]) -> str:
    """'  sources NAME=V ...' for the sources this sample's shard has ('' when none)."""
    vals = [(k[len(SOURCE_PREFIX) :], v) for k, v in s.items() if k.startswith(SOURCE_PREFIX) and not np.isnan(v)]
    return ("  sources " + " ".join(f"{k}={_num(v)}" for k, v in vals)) if vals else ""


def group_line(group: tuple[int, int], samples: list[dict[str, Any]]) -> str:
    """One line on the group: its samples, reward mean and std (ddof=0) and whether all rewards are equal."""
    r = np.array([s["reward"] for s in samples], dtype=np.float64)
    r = r[~np.isnan(r)]
    mean, std = (float(r.mean()), float(r.std())) if len(r) else (np.nan, np.nan)
    equal = "yes" if len(r) >= 2 and r.min() == r.max() else "no"
    return (
        f"--- group {group[1]} of step {group[0]}: {len(samples)} samples, {len(r)} scored, "
        f"reward mean {_num(mean)} std {_num(std)}, all equal: {equal}"
    )
