"""PNG figures of an archive (matplotlib, Agg backend; the `plot` command).

    paths = plot(Archive.open(run_dir), "figs/")

Writes:
  trends.png           reward, sequence KL and response length against policy version:
                       median line, p25-p75 and p10-p90 bands
  reward_hist.png      reward histograms of chosen versions (default: first, middle, last)
  hacking_signals.png  length drift (mean and p90 relative to the first version, EOS rate),
                       repeated n-gram rate (mean, share of looping answers), and the correlation of
                       reward with length and with repetition within each version
  groups.png           group diagnostics (archive/groups.py): the share of zero-variance groups (all
                       rewards equal: no group-relative signal) and the mean within-group reward std
  overview.png         trends, histograms and hacking signals on one page
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive.store import Archive
from hpc_rlhf.archive.summary import group_by_version, load_table, summarize_table


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def default_versions(all_versions: list[int]) -> list[int]:
    if not all_versions:
        return []
    picks = [all_versions[0], all_versions[len(all_versions) // 2], all_versions[-1]]
    return list(dict.fromkeys(picks))


def _bands(ax, x, rows, name: str, label: str, color: str) -> None:
    q = {p: np.array([r[f"{name}_q{p}"] for r in rows], dtype=float) for p in (10, 25, 50, 75, 90)}
    ax.fill_between(x, q[10], q[90], color=color, alpha=0.15, lw=0, label="p10-p90")
    ax.fill_between(x, q[25], q[75], color=color, alpha=0.35, lw=0, label="p25-p75")
    ax.plot(x, q[50], color=color, lw=1.8, marker="o" if len(x) < 30 else None, ms=3, label="median")
    ax.set_xlabel("policy version")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _trends(axes, x, rows) -> None:
    _bands(axes[0], x, rows, "reward", "reward", "tab:blue")
    axes[0].set_title("reward")
    axes[0].legend(fontsize=7, loc="best")
    _bands(axes[1], x, rows, "kl", "sequence KL to reference (k1)", "tab:red")
    axes[1].set_title("KL to reference")
    _bands(axes[2], x, rows, "response_len", "response tokens", "tab:green")
    axes[2].set_title("response length")


def _hist(ax, groups: dict[int, dict[str, np.ndarray]], versions: list[int]) -> None:
    rs = [groups[v]["reward"][~np.isnan(groups[v]["reward"])] for v in versions if v in groups]
    allr = np.concatenate(rs) if rs else np.zeros(0)
    if len(allr) == 0:
        ax.text(0.5, 0.5, "no scored samples", ha="center", transform=ax.transAxes)
        return
    lo, hi = np.nanpercentile(allr, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 41)
    for v in versions:
        if v not in groups:
            continue
        r = groups[v]["reward"]
        r = r[~np.isnan(r)]
        ax.hist(r, bins=bins, histtype="stepfilled", alpha=0.35, density=True, label=f"v{v} (n={len(r)})")
        ax.hist(r, bins=bins, histtype="step", density=True, color=ax.patches[-1].get_facecolor()[:3])
    ax.set_xlabel("reward")
    ax.set_ylabel("density")
    ax.set_title("reward distribution")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _signals(axes, x, rows, groups: dict[int, dict[str, np.ndarray]], ngram: Optional[int]) -> None:
    ln = np.array([r["response_len_mean"] for r in rows], dtype=float)
    p90 = np.array([r["response_len_q90"] for r in rows], dtype=float)
    ax = axes[0]
    base = ln[0] if len(ln) and ln[0] > 0 else np.nan
    ax.plot(x, ln / base, color="tab:green", lw=1.8, label="mean length / first")
    ax.plot(x, p90 / (p90[0] if len(p90) and p90[0] > 0 else np.nan), color="tab:green", ls="--", label="p90 / first")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("relative length")
    ax2 = ax.twinx()
    ax2.plot(x, [r["eos_rate"] for r in rows], color="tab:purple", lw=1.2, label="EOS rate")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("EOS rate")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    ax.set_title("length drift")
    ax.set_xlabel("policy version")
    ax.grid(alpha=0.3)

    ax = axes[1]
    if ngram:
        key = f"rep_{ngram}gram"
        means = [r[f"{key}_rate"] for r in rows]
        loops = [_share(groups[v][key], 0.5) for v in x]
        ax.plot(x, means, color="tab:orange", lw=1.8, label="mean rate")
        ax.plot(x, loops, color="tab:orange", ls="--", label="share of answers with rate > 0.5")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        ax.set_title(f"repeated {ngram}-gram rate")
    else:
        ax.text(0.5, 0.5, "n-gram rate not computed", ha="center", transform=ax.transAxes)
    ax.set_xlabel("policy version")
    ax.grid(alpha=0.3)

    ax = axes[2]
    ax.plot(x, [_corr(groups[v]["reward"], groups[v]["response_len"]) for v in x], color="tab:green", lw=1.8,
            label="with response length")  # fmt: skip
    if ngram:
        key = f"rep_{ngram}gram"
        ax.plot(x, [_corr(groups[v]["reward"], groups[v][key]) for v in x], color="tab:orange", lw=1.8,
                label=f"with repeated {ngram}-gram rate")  # fmt: skip
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("corr(reward, ·) within a version")
    ax.set_xlabel("policy version")
    ax.grid(alpha=0.3)


def _groups(axes, x, rows) -> None:
    """Zero-variance group share and mean within-group reward std against policy version."""
    for ax, key, label, color in (
        (axes[0], "zero_var_share", "share of groups with all rewards equal", "tab:red"),
        (axes[1], "group_std_mean", "mean within-group reward std", "tab:blue"),
    ):
        ax.plot(x, [r[key] for r in rows], color=color, lw=1.8, marker="o" if len(x) < 30 else None, ms=3)
        ax.set_title(label)
        ax.set_xlabel("policy version")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylim(bottom=0)


def _share(a: np.ndarray, above: float) -> float:
    a = a[~np.isnan(a)]
    return float((a > above).mean()) if len(a) else np.nan


def _corr(r: np.ndarray, ln: np.ndarray) -> float:
    ok = ~np.isnan(r) & ~np.isnan(ln.astype(float))
    r, ln = r[ok].astype(float), ln[ok].astype(float)
    if len(r) < 3 or r.std() == 0 or ln.std() == 0:
        return np.nan
    return float(np.corrcoef(r, ln)[0, 1])


def plot_table(
    t: dict[str, np.ndarray],
    out_dir: str,
    versions: Optional[list[int]] = None,
    ngram: Optional[int] = 3,
    dpi: int = 100,
) -> list[str]:
    """Write the figures of a per-sample table (see `summary.load_table`) into out_dir; returns the paths."""
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    rows = summarize_table(t, ngram, bands=True)
    groups = dict(group_by_version(t))
    x = [r["policy_version"] for r in rows]
    chosen = [int(v) for v in versions] if versions else default_versions(x)
    paths = []

    def save(fig, name: str) -> None:
        p = os.path.join(out_dir, name)
        fig.savefig(p, dpi=dpi)
        plt.close(fig)
        paths.append(p)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    _trends(axes, x, rows)
    save(fig, "trends.png")

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    _hist(ax, groups, chosen)
    save(fig, "reward_hist.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    _signals(axes, x, rows, groups, ngram)
    save(fig, "hacking_signals.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    _groups(axes, x, rows)
    save(fig, "groups.png")

    fig = plt.figure(figsize=(13, 7.6), constrained_layout=True)
    gs = fig.add_gridspec(2, 4)
    top = [fig.add_subplot(gs[0, i]) for i in range(3)] + [fig.add_subplot(gs[0, 3])]
    bottom = [fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1]), fig.add_subplot(gs[1, 2:])]
    _trends(top[:3], x, rows)
    _hist(top[3], groups, chosen)
    _signals(bottom, x, rows, groups, ngram)
    fig.suptitle(f"rollout archive: {int(sum(r['samples'] for r in rows))} samples, {len(rows)} policy versions")
    save(fig, "overview.png")
    return paths


def plot(
    arc: Archive, out_dir: str, versions: Optional[list[int]] = None, ngram: Optional[int] = 3, **filters: Any
) -> list[str]:
    """Read the archive once (per-sample fields only) and write the figures; returns the PNG paths."""
    return plot_table(load_table(arc, ngram, **filters), out_dir, versions, ngram)
