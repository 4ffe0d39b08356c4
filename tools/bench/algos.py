"""A train rank's peak memory and step time, PPO against the critic-free algorithms, on the same batch.

    python tools/bench/algos.py [--size large] [--algos ppo grpo] [--rounds 2] [--repeats 5] [--out algos.json]

Records one batch: a short single-rank PPO run of the workload (common.py's size, 4 prompts x 4 samples
per step, so GRPO has groups) and its step-1 scored shards. Then, per round and algorithm, alternately,
a fresh process builds the Trainer of that algorithm (what a train rank holds: the models, optimizers,
KL controller) and calls train_step on those shards `repeats` times after one warm-up: the same batch,
the same epochs and minibatches, only the algorithm differs. Reports per algorithm the process's peak
RSS (ru_maxrss, the train rank's high-water mark: models, optimizer states, activations) and
time/train_s (the whole step: read, layout, old values, advantages, epochs), median and best.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

GROUPS = ["generate.prompts_per_step=4", "generate.samples_per_prompt=4"]


def child(algo: str, run_dir: str, repeats: int) -> dict:
    """In a fresh process: the Trainer of `algo` on the recorded step-1 shards; its RSS and step times."""
    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.parallel.dp import DataParallel
    from hpc_rlhf.roles.trainer import train_step
    from hpc_rlhf.roles.trainer_context import build_context

    cfg = load_config(os.path.join(run_dir, "config.yaml"), [f"algo.name={algo}", f"run_dir={run_dir}"])
    cfg = dataclasses.replace(cfg, run_dir=run_dir)
    torch.set_num_threads(common.THREADS)
    tr = build_context(cfg, run_dir, torch.device("cpu"), DataParallel(0, 1))
    built_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    paths = sorted(glob.glob(os.path.join(run_dir, "rollouts", "step_000001", "scored_*.h5")))
    train_step(tr, 1, paths)  # warm-up (AdamW states are allocated at the first step)
    steps = [train_step(tr, 1, paths)[0] for _ in range(repeats)]
    return {
        "algo": algo,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_build_mib": built_kb / 1024,
        "train_s": [m["time/train_s"] for m in steps],
        "value_fwd_s": [m["time/value_fwd_s"] for m in steps],
        "update_s": [m["time/train_update_s"] for m in steps],
    }


def run(size: str, algos: list[str], rounds: int, repeats: int) -> dict:
    """Record the batch, run the alternated rounds; {"machine", "size", "summary", "runs"}."""
    machine = common.machine()
    work = tempfile.mkdtemp(prefix="hpc_rlhf_algos_")
    run_dir = os.path.join(work, "record")
    common.run_ours([*common.our_overrides(size, run_dir, steps=2), *GROUPS])
    results: dict[str, list[dict]] = {a: [] for a in algos}
    for _ in range(rounds):
        for algo in algos:
            cmd = [sys.executable, __file__, "--child", algo, run_dir, "--repeats", str(repeats)]
            out = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, check=True).stdout
            results[algo].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for algo, rs in results.items():
        times = [t for r in rs for t in r["train_s"]]
        summary[algo] = {
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "rss_after_build_mib": max(r["rss_after_build_mib"] for r in rs),
            "train_s_median": common.median(times),
            "train_s_best": min(times),
            "value_fwd_s_median": common.median([t for r in rs for t in r["value_fwd_s"]]),
            "update_s_median": common.median([t for r in rs for t in r["update_s"]]),
        }
        print(f"{algo:>13}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary[algo].items()), flush=True)
    return {"machine": machine, "size": size, "summary": summary, "runs": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="large", choices=list(common.SIZES))
    ap.add_argument("--algos", nargs="+", default=["ppo", "grpo"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, metavar=("ALGO", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats)))
        return
    res = run(args.size, args.algos, args.rounds, args.repeats)
    if args.out:
        common.write_json(args.out, res)


if __name__ == "__main__":
    main()
