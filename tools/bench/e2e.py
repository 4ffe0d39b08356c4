"""End-to-end PPO throughput of this project: samples/s, generated and trained tokens/s, seconds per
step and a per-phase breakdown, for the single-rank layout and the 1+1+1 layout (mpiexec, three
ranks sharing the machine's cores), with max_policy_lag 0 and 1; and for each role of the
multi-rank runs, the share of its wall time spent computing, in file I/O (shards, weights) and
waiting for another rank.

    python tools/bench/e2e.py [--sizes small large] [--out e2e.json]

Phase seconds come from the ranks' phase logs (HPC_RLHF_TIMING=1, RUN_DIR/timing/*.jsonl) over the
10 timed steps; step seconds from the trainer's metrics.jsonl timestamps. Also runs the demo config
(configs/demo.yaml, 1+1+1, a random reward model: the same compute as the demo's PPO) to measure
the shard I/O share at the demo size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LAYOUTS = [  # name, layout, single process, lag, shards per step
    ("single lag0", (1, 1, 1), True, 0, 1),
    ("single lag1", (1, 1, 1), True, 1, 1),
    ("1+1+1 lag0", (1, 1, 1), False, 0, 4),
    ("1+1+1 lag1", (1, 1, 1), False, 1, 4),
]


def summarize(res: dict, size: str | None) -> dict:
    step = common.median(res["step_s"])
    out = {
        "step_s_median": step,
        "samples_per_s": common.PROMPTS_PER_STEP * len(res["step_s"]) / sum(res["step_s"]),
        "metrics_median": res["metrics"],
        "roles": {},
    }
    if size is not None:
        a = common.arch(size)
        sps = out["samples_per_s"]
        out["generated_tokens_per_s"] = sps * common.NEW_TOKENS
        out["trained_tokens_per_s"] = sps * common.NEW_TOKENS * a["epochs"]  # response tokens x epochs
    for role, r in res["phases"].items():
        per_step = {k: v / r["steps"] for k, v in r["phases"].items()}
        out["roles"][role] = {
            "compute_share": r["compute_share"],
            "io_share": r["io_share"],
            "wait_share": r["wait_share"],
            "other_share": r["other_share"],
            "phase_s_per_step": per_step,
        }
    shard_io = sum(
        v
        for r in out["roles"].values()
        for k, v in r["phase_s_per_step"].items()
        if "shard" in k and k.startswith("io/")
    )
    out["shard_io_s_per_step"] = shard_io
    out["shard_io_share_of_step"] = shard_io / step if step else 0.0
    return out


def run(sizes: list[str], workdir: str, demo: bool = True) -> dict:
    out: dict = {"sizes": {}, "demo_size": None}
    for size in sizes:
        out["sizes"][size] = {}
        for name, layout, single, lag, shards in LAYOUTS:
            run_dir = os.path.join(workdir, f"e2e_{size}_{name.replace(' ', '_').replace('+', 'p')}")
            ov = common.our_overrides(size, run_dir, layout=layout, single=single, lag=lag, shards=shards)
            res = common.run_ours(ov)
            s = summarize(res, size)
            s.update({"layout": "1 (one process)" if single else "1+1+1", "max_policy_lag": lag, "shards": shards})
            out["sizes"][size][name] = s
            print(
                f"[e2e] {size} {name}: {s['samples_per_s']:.2f} samples/s, {s['step_s_median']:.3f} s/step", flush=True
            )
    if demo:
        run_dir = os.path.join(workdir, "e2e_demo_size")
        ov = [f"run_dir={run_dir}", f"total_steps={common.WARMUP + common.TIMED}", "logging.progress=false"]
        res = common.run_ours(ov)
        s = summarize(res, None)
        s["samples_per_s"] = 64 * len(res["step_s"]) / sum(res["step_s"])  # demo: 32 prompts x 2 samples
        out["demo_size"] = s
        print(
            f"[e2e] demo size (1+1+1): {s['step_s_median']:.3f} s/step, shard I/O "
            f"{100 * s['shard_io_share_of_step']:.1f}% of a step",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(common.SIZES), choices=list(common.SIZES))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = run(args.sizes, args.workdir or tempfile.mkdtemp(prefix="bench_e2e_"), demo=not args.no_demo)
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
