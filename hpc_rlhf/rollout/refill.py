"""Dynamic sampling with refill (DAPO; algo.dynamic_sampling): which rounds a step draws, which groups it keeps.

    rnd, j = shard_round(cfg, shard)             # shard r*S + j of a step = shard j of refill round r
    if short_of_groups(cfg, parts_by_round):     # fewer than prompts_per_step groups with reward variance
        ...draw round r + 1 (roles/refill.py: the trainer lead announces it, the generators sample it)
    parts, metrics = keep_groups(cfg, parts_by_round)

Round 0 is the step's plan (rollout/plan.py); refill round r >= 1 is `shards_per_step` more shards,
indices r*S .. r*S + S - 1, generated and scored by the same ranks as shards 0 .. S - 1, with prompts
and seeds that are pure functions of (run seed, step, round) (plan.refill_prompts, plan.sample_seed).
Whether a step draws round r + 1 depends only on the rewards of its rounds 0..r, so every layout and
every resume draws the same rounds. A group is the samples of one prompt in one shard; it is uniform
when all its rewards are equal (algo/critic_free.uniform_groups). The step keeps the FIRST
prompts_per_step non-uniform groups in (round, shard, position) order; a step still short after
algo.max_refill_rounds rounds adds its first uniform groups in the same order (zero advantage), so a
step always trains on prompts_per_step groups.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.rollout.shard import unpack_ragged
from hpc_rlhf.rundir import parse_shard_name

Fields = dict[str, np.ndarray]
RAGGED = (  # (offsets, flat arrays indexed by them)
    ("prompt_offsets", ("prompt_tokens",)),
    ("response_offsets", ("response_tokens", "gen_logprobs", "ref_logprobs")),
)


def shard_round(cfg: Config, shard: int) -> tuple[int, int]:
    """(refill round, shard within the round) of a step's shard index."""
    return divmod(shard, cfg.generate.shards_per_step)


def round_attrs(cfg: Config, shard: int) -> dict:
    """The shard metadata naming its refill round ({} for round 0: today's shards unchanged)."""
    rnd = shard_round(cfg, shard)[0]
    return {"refill_round": rnd} if rnd else {}


def rounds_used(cfg: Config, paths: Sequence[str]) -> Optional[int]:
    """Refill rounds a step drew, from its shard file names (None when dynamic sampling is off)."""
    if not cfg.algo.dynamic_sampling:
        return None
    named = [parse_shard_name(os.path.basename(p)) for p in paths]
    return max(shard_round(cfg, n[1])[0] for n in named if n is not None)


def group_ids(prompt_index: np.ndarray, refill_round: int) -> np.ndarray:
    """A scored shard's `group_id`s: a group is the samples of one prompt at one step, and a prompt drawn
    again in refill round r >= 1 of the step is another group: r * 2**32 + prompt_index (round 0, and
    every run without dynamic sampling: the prompt index itself)."""
    return np.asarray(prompt_index, dtype=np.int64) + (np.int64(refill_round) << np.int64(32))


def groups_of(part: Fields) -> list[tuple[np.ndarray, bool]]:
    """[(rows, uniform)] of a shard's groups (its prompts, in order of first appearance)."""
    pi, reward = np.asarray(part["prompt_index"]), np.asarray(part["reward"], np.float64)
    _, first = np.unique(pi, return_index=True)
    out = []
    for p in pi[np.sort(first)]:
        rows = np.flatnonzero(pi == p)
        r = reward[rows]
        out.append((rows, bool(r.max() == r.min())))
    return out


def nonuniform_count(parts_by_round: Sequence[Sequence[Fields]]) -> int:
    return sum(not u for parts in parts_by_round for part in parts for _, u in groups_of(part))


def short_of_groups(cfg: Config, parts_by_round: Sequence[Sequence[Fields]]) -> bool:
    """Whether the step should draw one more refill round."""
    rounds = len(parts_by_round) - 1
    return rounds < cfg.algo.max_refill_rounds and nonuniform_count(parts_by_round) < cfg.generate.prompts_per_step


def select(uniform: Sequence[bool], wanted: int) -> list[int]:
    """Indices (ascending) of the groups kept: the first `wanted` non-uniform ones, then, if fewer, the
    first uniform ones up to `wanted` in all."""
    good = [i for i, u in enumerate(uniform) if not u][:wanted]
    fill = [i for i, u in enumerate(uniform) if u][: wanted - len(good)]
    return sorted(good + fill)


def subset(part: Fields, rows: np.ndarray) -> Fields:
    """The samples `rows` of a shard's fields, laid out as a read of a shard holding only them."""
    n = len(part["prompt_index"])
    out = {k: np.asarray(v)[rows] for k, v in part.items() if np.ndim(v) >= 1 and len(v) == n and "offsets" not in k}
    for off, flats in RAGGED:
        lens = np.diff(part[off])[rows]
        out[off] = np.concatenate([[0], np.cumsum(lens)]).astype(part[off].dtype)
        for name in flats:
            pieces = unpack_ragged(part[name], part[off])
            out[name] = np.concatenate([pieces[i] for i in rows]) if len(rows) else part[name][:0]
    return out


def keep_groups(cfg: Config, parts_by_round: Sequence[Sequence[Fields]]) -> tuple[list[Fields], dict[str, float]]:
    """The step's training batch: the kept groups of every shard (shard order, empty shards left out),
    each group's `group_id` its rank among the kept (a prompt drawn in two rounds is two groups), and
    the algo/ metrics of the refill."""
    where = [
        (r, s, rows, u)
        for r, parts in enumerate(parts_by_round)
        for s, p in enumerate(parts)
        for rows, u in groups_of(p)
    ]
    wanted = cfg.generate.prompts_per_step
    kept = select([u for *_, u in where], wanted)
    by_shard: dict[tuple[int, int], list[np.ndarray]] = {}
    gid: dict[tuple[int, int], list[np.ndarray]] = {}
    for k, i in enumerate(kept):
        r, s, rows, _ = where[i]
        by_shard.setdefault((r, s), []).append(rows)
        gid.setdefault((r, s), []).append(np.full(len(rows), k, dtype=np.int64))
    out = []
    for key in sorted(by_shard):
        part = subset(parts_by_round[key[0]][key[1]], np.concatenate(by_shard[key]))
        part["group_id"] = np.concatenate(gid[key])
        out.append(part)
    good = sum(not where[i][3] for i in kept)
    metrics = {
        "algo/refill_rounds": float(len(parts_by_round) - 1),
        "algo/prompts_drawn": float(wanted * len(parts_by_round)),
        "algo/kept_groups": float(good),
        "algo/short_groups": float(wanted - good),
    }
    return out, metrics
