"""A world of one rank: generate, score and train in turn, in one process (no MPI messages).

The same role pieces as the multi-rank loops, in the same order per step, so a single-rank run
samples the same tokens as any layout. Data passes between the roles in memory: the generator takes
the trainer's tensors of each policy version (no weights files), the scorer and the trainer take the
fields each shard was written with (exactly what reading it back gives); the shards are still
written, as the archive.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Optional

from hpc_rlhf.config import Config
from hpc_rlhf.models import lora
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.evaluator import LocalEvals
from hpc_rlhf.roles.generator import Generator
from hpc_rlhf.roles.refill import step_rollouts
from hpc_rlhf.roles.scorer import Scorer
from hpc_rlhf.roles.trainer_loop import TrainSession
from hpc_rlhf.rollout.plan import behaviour_version


def run_single(cfg: Config, run_dir: str, device, stop_flag) -> str:
    """Run (or resume) the whole run in this process. Returns 'done' or 'stop'."""
    sess = TrainSession(cfg, run_dir, device, DataParallel(0, 1), lead=True, publish_files=False)
    policy = sess.ctx.policy  # LoRA: one base in the process (docs/lora.md); the generator shares it at lag 0
    share = lora.enabled(cfg)
    gen = Generator(cfg, run_dir, device, 0, policy if share and cfg.max_policy_lag == 0 else None)
    scorer = Scorer(cfg, run_dir, device, 0, lora.BaseView(policy) if share else None)
    evals = LocalEvals(cfg, run_dir, gen, sess.start_step, scorer.rm)  # eval.every: roles/evaluator.py
    verdict = "done"
    with sess.closing_on_error():
        for step in range(sess.start_step, cfg.total_steps):
            t0 = time.perf_counter()
            need = behaviour_version(step, cfg.max_policy_lag)
            evals.upto(need, sess.versions.__getitem__, sess.log)
            if gen.version != need:
                gen.load_state(need, sess.versions[need])
            paths, parts, refill, gen_s, score_s = step_rollouts(
                cfg, step, partial(_round, gen, scorer, step), _no_notice
            )
            metrics = sess.train_step(step, paths, parts)
            metrics.update(refill)  # algo/refill_* (algo.dynamic_sampling)
            sess.end_step(step, metrics, t0, paths, gen_s, score_s)
            for timer in (gen.timer, scorer.timer):  # tools/bench phase log (HPC_RLHF_TIMING=1)
                timer.flush(step)
            if sess.stop_at(step, stop_flag.is_set()):
                verdict = "stop"
                break
        if verdict == "done":
            evals.upto(cfg.total_steps, sess.versions.__getitem__, sess.log)
    sess.close(verdict)
    return verdict


def _round(gen: Generator, scorer: Scorer, step: int, rnd: int) -> tuple[list[str], Optional[list], float, float]:
    """Generate and score round `rnd` of `step` (roles/refill.py's `produce`): (scored paths, their fields, or
    None when a resume reused shards from disk, generate s, score s)."""
    paths, parts, gen_s, score_s = [], [], 0.0, 0.0
    n = gen.cfg.generate.shards_per_step
    for j in range(rnd * n, (rnd + 1) * n):
        gpath, g_s, generated = gen.generate(step, j)
        spath, s_s, scored = scorer.score(gpath, generated)
        paths.append(spath)
        parts.append(scored)
        gen_s, score_s = gen_s + g_s, score_s + s_s
    if any(p is None for p in parts):  # a resume reused shards from disk: read those
        return paths, None, gen_s, score_s
    return paths, parts, gen_s, score_s


def _no_notice(rnd: int) -> None:
    """One process: no generator to tell about a refill round."""
