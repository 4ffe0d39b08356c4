"""The train step padded against token-budget micro-batches (train.max_tokens_per_microbatch), on ragged responses.

    python tools/bench/microbatch.py [--algo grpo] [--hidden 128] [--rows 32] [--budget 2048] [--rounds 7] [--out FILE]

One batch of `rows` samples (2 per prompt, prompts of 32 tokens, responses of 8 to 256 tokens drawn
uniformly from a fixed seed), the tiny config widened to `--hidden` (4 layers, 2 torch threads). Two
train contexts are built from the same seed, one padded (budget 0) and one with the budget; the first
step's weights are compared (max abs difference), then the two step on the same batch in alternated
rounds (A, B, A, B, ...), `time/train_s` of each recorded. Prints JSON: the medians, their ratio
(padded / budget, > 1 = the budget is faster), every round, the weight difference and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = common.REPO
MAX_NEW = 256


def batch(rows: int, seed: int = 0) -> dict:
    """The fields of one scored shard: `rows` samples, 2 per prompt, responses of 8 to MAX_NEW tokens."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(8, MAX_NEW + 1, rows)
    prompts = [rng.integers(5, 500, 32) for _ in range(rows // 2)]
    responses = [rng.integers(5, 500, int(n)) for n in lens]
    return {
        "prompt_index": np.arange(rows, dtype=np.int64) // 2,
        "sample_index": np.arange(rows, dtype=np.int32) % 2,
        "reward": (reward := rng.normal(size=rows).astype(np.float32)),
        "reward_sources": reward[:, None],
        "eos": (lens < MAX_NEW).astype(np.uint8),
        "prompt_tokens": np.concatenate([prompts[i // 2] for i in range(rows)]),
        "prompt_offsets": np.arange(rows + 1, dtype=np.int64) * 32,
        "response_tokens": np.concatenate(responses),
        "response_offsets": np.concatenate([[0], np.cumsum(lens)]),
        "gen_logprobs": -rng.uniform(0.5, 4.0, int(lens.sum())).astype(np.float32),
        "ref_logprobs": -rng.uniform(0.5, 4.0, int(lens.sum())).astype(np.float32),
    }


def tokens_computed(ctx, parts: list, budget: int, steps: range) -> int:
    """Token positions the forward passes of `steps` lay out (padded rows included), as minibatch_epochs cuts them."""
    import torch

    from hpc_rlhf.roles.trainer_micro import micro_batches
    from hpc_rlhf.roles.trainer_step import StepData

    sd, m = StepData(parts, 0, "cpu"), ctx.cfg.ppo.minibatch_size
    total = 0
    for step in steps:
        for epoch in range(ctx.cfg.ppo.epochs):
            perm = np.random.default_rng([ctx.cfg.seed, step, epoch, 0xB47C]).permutation(sd.size)
            for start in range(0, sd.size, m):
                rows = torch.as_tensor(np.sort(perm[start : start + m]))
                total += sum(b.input_ids.numel() for b, _ in micro_batches(sd.batch, rows, budget))
    return total


def contexts(args, run_dir: str):
    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.parallel.dp import DataParallel
    from hpc_rlhf.roles.trainer_context import build_context
    from hpc_rlhf.stages.tokenizer import save_run_tokenizer

    h = args.hidden
    over = [
        f"run_dir={run_dir}",
        f"algo.name={args.algo}",
        "task.vocab_words=508",
        f"model.arch.hidden_size={h}",
        "model.arch.num_layers=4",
        f"model.arch.num_heads={max(1, h // 32)}",
        f"model.arch.intermediate_size={4 * h}",
        "model.arch.max_position=512",
        "model.value_init=policy",
        f"generate.max_new_tokens={MAX_NEW}",
        f"ppo.minibatch_size={args.rows // 2}",
    ]
    cfg = load_config(os.path.join(REPO, "configs", "tiny.yaml"), over)
    save_run_tokenizer(cfg, run_dir)
    torch.set_num_threads(common.THREADS)
    cpu, dp = torch.device("cpu"), DataParallel(0, 1)
    budget = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_tokens_per_microbatch=args.budget))
    return build_context(cfg, run_dir, cpu, dp), build_context(budget, run_dir, cpu, dp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="grpo")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from hpc_rlhf.roles.trainer import train_step

    with tempfile.TemporaryDirectory(prefix="hpc-rlhf-mb-") as run_dir:
        padded, packed = contexts(args, run_dir)
        parts = [batch(args.rows)]
        times: dict[str, list[float]] = {"padded": [], "budget": []}
        for name, ctx in (("padded", padded), ("budget", packed)):
            times[name].append(train_step(ctx, 0, [], parts=parts)[0]["time/train_s"])
        models = [(padded.policy, packed.policy)] + ([(padded.value, packed.value)] if padded.value else [])
        diff = max(
            float((a - b).detach().abs().max()) for x, y in models for a, b in zip(x.parameters(), y.parameters())
        )
        for r in range(1, args.rounds):
            for name, ctx in (("padded", padded), ("budget", packed)):
                times[name].append(train_step(ctx, r, [], parts=parts)[0]["time/train_s"])
                print(f"round {r} {name}: {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    med = {k: common.median(v[1:]) for k, v in times.items()}  # round 0 is the warm-up (and the check)
    out = {
        "algo": args.algo,
        "hidden": args.hidden,
        "rows": args.rows,
        "budget": args.budget,
        "first_step_max_abs_weight_diff": diff,
        "median_train_s": med,
        "ratio_padded_over_budget": med["padded"] / med["budget"],
        "tokens_computed": {
            "padded": tokens_computed(padded, parts, 0, range(args.rounds)),
            "budget": tokens_computed(padded, parts, args.budget, range(args.rounds)),
        },
        "rounds": times,
        "machine": common.machine(),
    }
    text = json.dumps(out, indent=1)
    if args.out:
        common.write_json(args.out, out)
    print(text)


if __name__ == "__main__":
    main()
