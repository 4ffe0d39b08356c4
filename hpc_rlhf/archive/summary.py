"""Per-policy-version statistics of an archive (the `summary` command and the plots' data).

    rows = summarize(Archive.open(run_dir))          # list of dicts, one per policy version
    evals = summarize_eval(Archive.open(run_dir))    # one per evaluation (eval shards, eval.every), apart

Definitions (per version, over its samples):
  reward_*          over scored samples only (reward not NaN); std with ddof=1; quantiles linear (numpy default)
  kl_mean           mean over scored samples of the sequence KL sum_t (gen_logprob - ref_logprob)   (k1)
  kl_per_token      sum of sequence KLs / sum of response tokens (token-weighted mean of the per-token k1)
  response_len_mean mean response tokens (EOS included when emitted); eos_rate: share ending with EOS
  rep_<n>gram_rate  mean over samples (with >= n tokens) of the share of their n-grams repeating an earlier one
  groups, zero_var_share, group_std_mean
                    the version's groups (step, group_id) of >= 2 scored samples, the share of them whose
                    rewards are all equal, the mean within-group reward std (ddof=0): archive/groups.py
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive.discover import eval_refs
from hpc_rlhf.archive.groups import group_stats
from hpc_rlhf.archive.store import Archive
from hpc_rlhf.rollout.shard import read_shard

QUANTILES = (0.10, 0.50, 0.90)
BANDS = (0.10, 0.25, 0.50, 0.75, 0.90)


def summary_fields(ngram: Optional[int]) -> list[str]:
    f = ["policy_version", "reward", "response_len", "eos", "kl_seq", "step", "group_id"]
    return f + ([f"rep_{ngram}gram"] if ngram else [])


def load_table(arc: Archive, ngram: Optional[int] = 3, **filters: Any) -> dict[str, np.ndarray]:
    """The compact per-sample table summary and plots need (one pass over the archive)."""
    return arc.table(summary_fields(ngram), **filters)


def group_by_version(t: dict[str, np.ndarray]) -> list[tuple[int, dict[str, np.ndarray]]]:
    v = t["policy_version"]
    if len(v) == 0:
        return []
    order = np.argsort(v, kind="stable")
    vs = v[order]
    cuts = np.flatnonzero(np.diff(vs)) + 1
    out = []
    for idx in np.split(order, cuts):
        out.append((int(v[idx[0]]), {k: a[idx] for k, a in t.items()}))
    return out


def _q(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return [math.nan] * len(qs)
    return [float(a) for a in np.quantile(x, qs)]


def _mean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)] if x.dtype.kind == "f" else x
    return float(np.mean(x, dtype=np.float64)) if len(x) else math.nan


def summarize_table(t: dict[str, np.ndarray], ngram: Optional[int] = 3, bands: bool = False) -> list[dict[str, Any]]:
    rows = []
    for ver, g in group_by_version(t):
        r = g["reward"].astype(np.float64)
        scored = ~np.isnan(r)
        rs = r[scored]
        kl = g["kl_seq"].astype(np.float64)
        lens = g["response_len"].astype(np.float64)
        has_kl = ~np.isnan(kl)
        row: dict[str, Any] = {
            "policy_version": ver,
            "samples": int(len(r)),
            "scored": int(scored.sum()),
            "reward_mean": _mean(rs),
            "reward_std": float(np.std(rs, ddof=1)) if len(rs) > 1 else math.nan,
        }
        for q, val in zip(QUANTILES, _q(rs, QUANTILES)):
            row[f"reward_p{round(q * 100)}"] = val
        row.update(group_stats(g["step"], g["group_id"], r))
        row["kl_mean"] = _mean(kl[has_kl])
        tok = lens[has_kl].sum()
        row["kl_per_token"] = float(kl[has_kl].sum() / tok) if tok > 0 else math.nan
        row["response_len_mean"] = _mean(lens)
        row["eos_rate"] = _mean(g["eos"].astype(np.float64))
        if ngram:
            row[f"rep_{ngram}gram_rate"] = _mean(g[f"rep_{ngram}gram"].astype(np.float64))
        if bands:
            for name, arr in (("reward", rs), ("kl", kl), ("response_len", lens)):
                for q, val in zip(BANDS, _q(arr, BANDS)):
                    row[f"{name}_q{round(q * 100)}"] = val
        rows.append(row)
    return rows


def summarize(arc: Archive, ngram: Optional[int] = 3, bands: bool = False, **filters: Any) -> list[dict[str, Any]]:
    """One dict per policy version (see the module docstring for the definitions)."""
    return summarize_table(load_table(arc, ngram, **filters), ngram, bands)


def summarize_eval(arc: Archive) -> list[dict[str, Any]]:
    """One dict per evaluation (eval shards, kind 'eval'): the policy version and the step after which it
    ran, its samples, the mean reward and each eval source's mean, the mean response length and EOS rate."""
    by_version: dict[int, list[dict]] = {}
    for ref in eval_refs(arc.files):
        data, attrs = read_shard(ref.path, ["reward", "reward_sources", "response_len", "eos"])
        by_version.setdefault(int(attrs["policy_version"]), []).append({**data, "names": attrs["reward_sources"]})
    rows = []
    for v, parts in sorted(by_version.items()):
        values = np.concatenate([p["reward_sources"] for p in parts]).astype(np.float64)
        row: dict[str, Any] = {"policy_version": v, "step": v - 1, "samples": len(values)}
        row["reward_mean"] = _mean(np.concatenate([p["reward"] for p in parts]).astype(np.float64))
        row.update({f"reward/{n}": _mean(values[:, j]) for j, n in enumerate(parts[0]["names"])})
        row["response_len_mean"] = _mean(np.concatenate([p["response_len"] for p in parts]).astype(np.float64))
        row["eos_rate"] = _mean(np.concatenate([p["eos"] for p in parts]).astype(np.float64))
        rows.append(row)
    return rows


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def format_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], indent=1)


def format_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _clean(v) is None else v) for k, v in r.items()})
    return buf.getvalue()


_SHORT = {
    "policy_version": "version",
    "response_len_mean": "len_mean",
    "kl_per_token": "kl/token",
    "zero_var_share": "zero_var",
    "group_std_mean": "group_std",
}


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no samples)"
    keys = list(rows[0])
    head = [_SHORT.get(k, k.replace("_rate", "")) for k in keys]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    body = [[cell(r[k]) for k in keys] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
