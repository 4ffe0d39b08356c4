"""A step's rollouts with dynamic sampling (algo.dynamic_sampling): round 0, then refill rounds while short.

    paths, parts, metrics, gen_s, score_s = step_rollouts(cfg, step, produce, announce)

`produce(rnd)` brings round `rnd`'s scored shards, in shard order, as (paths, fields or None, generate
seconds, score seconds): the multi-rank trainer waits for the scorers' notices (roles/trainer_loop.py),
the single-rank loop generates and scores them itself (launch/single.py). `announce(rnd)` is called
before a refill round is produced: the train lead tells the generators ("refill", step, rnd) over CTRL;
every train rank decides alone, from the same shards, so no rank waits on another's decision. With
dynamic sampling off this is round 0 unchanged (fields passed through, None: the trainer reads them).
The rules (which rounds, which groups) are rollout/refill.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from hpc_rlhf.config import Config
from hpc_rlhf.rollout.refill import keep_groups, short_of_groups
from hpc_rlhf.rollout.shard import read_shard

Round = tuple[list[str], Optional[list], float, float]


def step_rollouts(
    cfg: Config, step: int, produce: Callable[[int], Round], announce: Callable[[int], None]
) -> tuple[list[str], Optional[list], dict[str, float], float, float]:
    """(every consumed shard's path, the fields to train on or None, algo/ refill metrics, generate s, score s)."""
    paths, parts, gen_s, score_s = produce(0)
    if not cfg.algo.dynamic_sampling:
        return paths, parts, {}, gen_s, score_s
    by_round = [_fields(paths, parts)]
    while short_of_groups(cfg, by_round):
        rnd = len(by_round)
        announce(rnd)
        p, f, g, s = produce(rnd)
        paths, gen_s, score_s = paths + p, gen_s + g, score_s + s
        by_round.append(_fields(p, f))
    kept, metrics = keep_groups(cfg, by_round)
    return paths, kept, metrics, gen_s, score_s


def _fields(paths: list[str], parts: Optional[list]) -> list:
    """The shards' fields: those given (None where a shard on disk was reused), else read."""
    parts = parts if parts is not None else [None] * len(paths)
    return [f if f is not None else read_shard(p)[0] for p, f in zip(paths, parts)]
