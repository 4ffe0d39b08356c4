"""Group diagnostics: how much signal a policy version's groups carry for GRPO-family advantages.

    stats = group_stats(step, group_id, reward)     # per-sample arrays of one version (summary, plots)

A group is the samples of one prompt at one step, keyed (step, group_id) (docs/rollout_format.md).
Over the samples whose reward is not NaN (scored), and the groups holding at least 2 of them:

  groups          how many such groups
  zero_var_share  share of them whose rewards are all equal (exactly): their group-relative advantage
                  is zero, so they teach GRPO/RLOO nothing
  group_std_mean  mean over them of the within-group reward std (population std, ddof=0)

NaN (and groups 0) when a version has no group of 2 scored samples.
"""

from __future__ import annotations

import math

import numpy as np

KEYS = ("groups", "zero_var_share", "group_std_mean")


def group_stats(step: np.ndarray, group_id: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """The KEYS of the groups (step, group_id) of these samples (see the module docstring)."""
    ok = ~np.isnan(reward)
    s, g, r = np.asarray(step)[ok], np.asarray(group_id)[ok], reward[ok].astype(np.float64)
    order = np.lexsort((g, s))
    s, g, r = s[order], g[order], r[order]
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (g[1:] != g[:-1])]) if len(r) else np.zeros(0, int)
    counts = np.diff(np.r_[starts, len(r)])
    keep = counts >= 2
    if not keep.any():
        return {"groups": 0, "zero_var_share": math.nan, "group_std_mean": math.nan}
    mean = np.add.reduceat(r, starts) / counts
    dev = r - np.repeat(mean, counts)
    std = np.sqrt(np.add.reduceat(dev * dev, starts) / counts)
    equal = np.minimum.reduceat(r, starts) == np.maximum.reduceat(r, starts)
    return {
        "groups": int(keep.sum()),
        "zero_var_share": float(equal[keep].mean()),
        "group_std_mean": float(std[keep].mean()),
    }
