"""Pick samples of an archive and render their prompt and response as text (the `show` command).

    samples = select(arc, version=40, top=5)        # list of dicts with tokens, reward, KL, location
    print(render(arc, samples))                     # decoded with RUN_DIR/tokenizer, else token ids

Two passes for --top/--bottom: per-sample rewards first, then only the shards holding the chosen rows.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive.store import Archive, Filters
from hpc_rlhf.archive.text import decode, load_tokenizer
from hpc_rlhf.errors import UserError

SHOW_FIELDS = [
    "policy_version",
    "step",
    "prompt_index",
    "sample_index",
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
) -> list[dict[str, Any]]:
    """Samples matching the filters: the `top`/`bottom` K by reward, else the first `limit` in archive order."""
    if top is not None and bottom is not None:
        raise UserError("give --top or --bottom, not both")
    filt = Filters(versions=version, prompts=prompt, rewards=rewards)
    k = top if top is not None else bottom
    if k is None:
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        for b in arc.iter_batches(SHOW_FIELDS, filters=filt):
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
    for b in arc.iter_batches(SHOW_FIELDS, shard_ids={s for s, _ in want}):
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


def render(arc: Archive, samples: list[dict[str, Any]], tokenizer_path: Optional[str] = None) -> str:
    """Human-readable text of the samples; token ids when the run has no (loadable) tokenizer."""
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
            f"  len {s['response_len']}  eos {'yes' if s['eos'] else 'no'}  [{where} row {s['row']}]"
        )
        blocks.append(
            f"{head}\nprompt{label}:   {decode(tok, s['prompt_tokens'])}\n"
            f"response{label}: {decode(tok, s['response_tokens'])}"
        )
    if not blocks:
        return "(no samples match)"
    return "\n\n".join(blocks)
