"""Expectations computed from the tests' ground truth with plain numpy / Python (not the archive code)."""

from __future__ import annotations

import math

import numpy as np


def kl_seq(s: dict) -> float:
    if not s["scored"]:
        return math.nan
    return float(sum(float(g) - float(r) for g, r in zip(s["gen_logprobs"], s["ref_logprobs"])))


def rep_rate(tokens: list[int], n: int) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return math.nan
    return 1.0 - len(set(grams)) / len(grams)


def distinct(tokens: list[int], n: int) -> float:
    r = rep_rate(tokens, n)
    return math.nan if math.isnan(r) else 1.0 - r


def summary(truth: list[dict], n: int = 3) -> dict[int, dict]:
    out = {}
    for v in sorted({s["policy_version"] for s in truth}):
        g = [s for s in truth if s["policy_version"] == v]
        rw = np.array([float(s["reward"]) for s in g if s["scored"]])
        kl = np.array([kl_seq(s) for s in g if s["scored"]])
        lens_scored = np.array([len(s["response_tokens"]) for s in g if s["scored"]])
        reps = np.array([rep_rate(s["response_tokens"], n) for s in g])
        reps = reps[~np.isnan(reps)]
        out[v] = {
            "samples": len(g),
            "scored": len(rw),
            "reward_mean": rw.mean(),
            "reward_std": rw.std(ddof=1),
            "reward_p10": np.percentile(rw, 10),
            "reward_p50": np.median(rw),
            "reward_p90": np.percentile(rw, 90),
            "kl_mean": kl.mean(),
            "kl_per_token": kl.sum() / lens_scored.sum(),
            "response_len_mean": np.mean([len(s["response_tokens"]) for s in g]),
            "eos_rate": np.mean([s["eos"] for s in g]),
            f"rep_{n}gram_rate": reps.mean(),
        }
    return out


def key(s: dict) -> tuple:
    return (s["step"], s["shard"], s["row"])


def group_rewards(truth: list[dict], version: int) -> list[list[float]]:
    """The scored rewards of each group (step, group_id) of a version with at least 2 of them (plain loops)."""
    groups: dict[tuple, list[float]] = {}
    for s in truth:
        if s["policy_version"] == version and s["scored"] and not math.isnan(float(s["reward"])):
            groups.setdefault((s["step"], s["group_id"]), []).append(float(s["reward"]))
    return [g for g in groups.values() if len(g) >= 2]


def group_summary(groups: list[list[float]]) -> dict:
    """groups, zero_var_share and group_std_mean (population std) of these groups, with plain Python."""
    if not groups:
        return {"groups": 0, "zero_var_share": math.nan, "group_std_mean": math.nan}
    stds = []
    for g in groups:
        mean = sum(g) / len(g)
        stds.append(math.sqrt(sum((x - mean) ** 2 for x in g) / len(g)))
    equal = [all(x == g[0] for x in g) for g in groups]
    return {"groups": len(groups), "zero_var_share": sum(equal) / len(groups), "group_std_mean": sum(stds) / len(stds)}
