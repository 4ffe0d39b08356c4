"""A synthetic, realistic-looking rollout archive written with the project's own `write_shard`.

    make_archive("/tmp/run", steps=20, shards_per_step=4, samples_per_shard=256)

Used by tools/bench/archive_bench.py and to draw docs/img/archive_example.png. Reward rises with the
policy version, partly through a "trick": later versions answer longer and loop (repeat n-grams) more
often, and drift further from the reference (KL grows). Not used by the tests, which build their own.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from hpc_rlhf.rollout.schema import LEGACY_SOURCE
from hpc_rlhf.rollout.shard import write_shard
from hpc_rlhf.rundir import RunDir

EOS_ID = 2


def shard_data(
    rng: np.random.Generator,
    n: int,
    version: int,
    step: int,
    shard: int,
    total_versions: int,
    vocab: int = 512,
    prompt_len: tuple[int, int] = (16, 32),
    response_len: tuple[int, int] = (16, 64),
) -> dict[str, np.ndarray]:
    """Every scored field of one shard of n samples (vectorised; no Python loop per sample)."""
    frac = version / max(total_versions - 1, 1)
    pl = rng.integers(prompt_len[0], prompt_len[1] + 1, n)
    lo, hi = response_len
    mean_len = lo + (hi - lo) * (0.35 + 0.4 * frac)
    rl = np.clip(np.round(rng.normal(mean_len, (hi - lo) / 6, n)), lo, hi).astype(np.int64)
    po = np.zeros(n + 1, np.int64)
    np.cumsum(pl, out=po[1:])
    ro = np.zeros(n + 1, np.int64)
    np.cumsum(rl, out=ro[1:])
    P, R = int(po[-1]), int(ro[-1])
    prompt_tokens = rng.integers(4, vocab, P)
    resp = rng.integers(4, vocab, R)
    # looping answers: token j of a sample repeats token j % period (a growing share as training goes on)
    loop = rng.random(n) < 0.05 + 0.35 * frac
    period = rng.integers(2, 6, n)
    starts = np.repeat(ro[:-1], rl)
    pos = np.arange(R) - starts
    lt = np.repeat(loop, rl)
    resp[lt] = resp[(starts + pos % np.repeat(period, rl))[lt]]
    eos = rng.random(n) < 0.9 - 0.4 * frac
    resp[ro[1:][eos] - 1] = EOS_ID
    gen = -rng.exponential(1.5, R).astype(np.float32)
    ref = gen - rng.normal(0.02 + 0.08 * frac, 0.1, R).astype(np.float32)
    reward = rng.normal(-0.5 + 1.2 * frac, 0.5, n) + 0.01 * (rl - mean_len) + 0.4 * loop
    prompt_index = (step * 997 + shard * n + np.arange(n)) // 2
    return {
        "prompt_index": prompt_index,
        "sample_index": np.arange(n) % 2,
        "policy_version": np.full(n, version),
        "step": np.full(n, step),
        "seed": rng.integers(0, 2**62, n),
        "prompt_len": pl,
        "response_len": rl,
        "eos": eos.astype(np.uint8),
        "prompt_offsets": po,
        "response_offsets": ro,
        "prompt_tokens": prompt_tokens,
        "response_tokens": resp,
        "gen_logprobs": gen,
        "ref_logprobs": ref,
        "reward": reward.astype(np.float32),
        "group_id": prompt_index,
        "reward_sources": reward.astype(np.float32).reshape(n, 1),  # one source: the reward itself
    }


SOURCE = {"reward_sources": [LEGACY_SOURCE], "reward_weights": [1.0]}


def make_archive(
    run_dir: str,
    steps: int = 20,
    shards_per_step: int = 4,
    samples_per_shard: int = 256,
    seed: int = 0,
    vocab: int = 512,
    generated: bool = False,
    lag: int = 0,
    response_len: tuple[int, int] = (16, 64),
    progress: Optional[callable] = None,
) -> int:
    """Write RUN_DIR/rollouts/step_*/scored_*.h5 (and gen_*.h5 when `generated`); returns samples written."""
    rng = np.random.default_rng(seed)
    total = 0
    for step in range(steps):
        version = max(step - lag, 0)
        rd = RunDir(run_dir)
        for shard in range(shards_per_step):
            d = shard_data(rng, samples_per_shard, version, step, shard, steps, vocab, response_len=response_len)
            attrs = {
                "run_id": "synthetic",
                "policy_version": version,
                "step": step,
                "shard_index": shard,
                "num_samples": samples_per_shard,
                "config_fingerprint": "synthetic",
            }
            if generated:
                write_shard(
                    rd.shard(step, shard, "generated"),
                    d,
                    {**attrs, "kind": "generated", "producer_role": "generate", "producer_rank": 0},
                )
            write_shard(
                rd.shard(step, shard, "scored"),
                d,
                {**attrs, **SOURCE, "kind": "scored", "producer_role": "score", "producer_rank": 1},
            )
            total += samples_per_shard
        if progress:
            progress(step)
    return total
