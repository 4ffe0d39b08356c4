"""Optimization role: one RL step (PPO, GRPO, RLOO, REINFORCE++, ...) on a step's scored shards, data-parallel.

    ctx = build_context(cfg, run_dir, device, dp)            # roles/trainer_context.py: the rank's state
    metrics, sd = train_step(ctx, step, scored_paths)        # -> policy version step + 1

A step, in order: read the scored shards (shard order) and lay out the batch; old values (a critic's:
rows split over the train ranks, then all-gathered); per-token rewards (-beta*KL + score on the last
token) and the advantages of the registered estimator algo.name names; then `ppo.epochs` passes over
minibatches drawn by a permutation seeded from (seed, step, epoch). Each train rank takes an equal
slice of every minibatch; losses are normalised by the minibatch's global token count and gradients
summed, so any number of trainers computes the single-rank update (up to float order). Old log-probs
are the generation-time ones from the shard, or recomputed by the training forward
(algo.behavior_logprobs=recompute; docs/algorithms.md). Last, the step is closed: version
+ 1, KL controller, metrics. The math is roles/trainer_step.py (no clock); `train_step` times it:
the `time/*` metrics and the phases of the HPC_RLHF_TIMING log that tools/bench reads (roles/timing.py).
The loop around it (resume, publish, checkpoints) is roles/trainer_loop.py.
"""

from __future__ import annotations

import time
from typing import Optional

from hpc_rlhf.roles.metrics_log import source_means
from hpc_rlhf.roles.timing import Spans
from hpc_rlhf.roles.trainer_context import TrainContext
from hpc_rlhf.roles.trainer_step import (
    StepData,
    advantages,
    close_step,
    minibatch_epochs,
    old_values,
    recompute_behavior,
)
from hpc_rlhf.rollout.shard import read_shard
from hpc_rlhf.runtime.faults import maybe_fail


def train_step(
    ctx: TrainContext, step: int, paths: list[str], parts: Optional[list] = None
) -> tuple[dict[str, float], StepData]:
    """One RL step on the scored shards at `paths` (read here), or on `parts`, their fields as a read
    would give them, when the caller holds them (the single-rank loop). Returns the step's metrics and
    its rollouts (the ledger and the step-metric hooks read them)."""
    maybe_fail("train")
    t0 = time.perf_counter()
    if parts is None:
        parts = [read_shard(path)[0] for path in paths]
    t_read = time.perf_counter() - t0
    sd = StepData(parts, ctx.tok.pad_token_id, ctx.device)
    t_layout = time.perf_counter() - t0 - t_read
    recompute_behavior(ctx, sd)  # algo.behavior_logprobs=recompute
    values = old_values(ctx, sd)
    t_value = time.perf_counter() - t0 - t_read - t_layout
    tg = advantages(sd, values, ctx.cfg, ctx.algorithm, ctx.kl_ctl.value)
    t_prep = time.perf_counter() - t0 - t_read  # layout + old values + advantages
    spans = Spans(ctx.timer)  # the optimizer steps inside each update; wait/* go to the timer
    means = minibatch_epochs(ctx, step, sd, tg, spans)
    t_update = time.perf_counter() - t0 - t_read - t_prep
    t_opt = spans.paired_max("optimizer/policy", "optimizer/value")  # the two models step side by side
    out = close_step(ctx, sd, tg, means)
    out.update(source_means(parts, [s.name for s in ctx.cfg.reward.sources]))
    out.update(
        {
            "time/train_read_s": t_read,
            "time/train_prep_s": t_prep,
            "time/value_fwd_s": t_value,
            "time/train_update_s": t_update,
            "time/train_optim_s": t_opt,
            "time/train_s": time.perf_counter() - t0,
        }
    )
    tm = ctx.timer
    tm.add("io/read_shards", t_read)
    tm.add("compute/value_fwd", t_value)
    tm.add("compute/layout", t_layout)
    tm.add("compute/advantages", t_prep - t_layout - t_value)
    tm.add("compute/train_fwd_bwd", t_update - t_opt)
    tm.add("compute/optimizer", t_opt)
    return out, sd
