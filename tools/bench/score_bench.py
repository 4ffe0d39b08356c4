"""The scorer's seconds per shard: the reward as a FUNCTION (the demo's gold rule) against the reward MODEL.

    python tools/bench/score_bench.py [--sizes small large] [--repeats 20] [--threads 2] [--out score.json]

Records one generated shard per size: step 0 of a two-step single-rank run of the workload (common.py's sizes,
4 prompts x 4 samples = 16 samples, 32 + 32 tokens). Then, in one process with 2 torch threads (--threads), two
Scorers of that run (roles/scorer.py) that differ only in `reward.sources`: `function` = the gold rule
(`hpc_rlhf.demo.task:gold_reward`: responses decoded, the rule called; no reward model loaded) and
`model` = the reward model (a randomly initialised one of the policy's size; its forward runs beside
the reference's). Each scores the same shard `repeats` times after a warm-up, the two alternated call
by call (the scored file is removed between calls so nothing is reused). Reports per source kind the
median and best seconds of `Scorer.score` (read, reference log-probs, reward, write) and of its
phases: `compute/score` (reference forward, plus the reward model's beside it), `compute/reward_sources`
(decoding + the function, or copying the model's scores), `io/*`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

GOLD = "hpc_rlhf.demo.task:gold_reward"
SOURCES = {
    "function": f"reward.sources=[{{name: gold, kind: function, function: '{GOLD}'}}]",
    "model": "reward.sources=[{name: rm, kind: model}]",
}
GROUPS = ["generate.prompts_per_step=4", "generate.samples_per_prompt=4"]


def measure(size: str, repeats: int, workdir: str, threads: int = common.THREADS) -> dict:
    os.environ["HPC_RLHF_TIMING"] = "1"  # the scorer's phase timer
    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.roles.scorer import Scorer
    from hpc_rlhf.rollout.plan import shard_path

    run_dir = os.path.join(workdir, f"score_{size}")
    common.run_ours([*common.our_overrides(size, run_dir, steps=2), *GROUPS, SOURCES["function"]])
    gen, scored = shard_path(run_dir, 0, 0, "generated"), shard_path(run_dir, 0, 0, "scored")
    torch.set_num_threads(threads)
    scorers = {}
    for kind, src in SOURCES.items():
        cfg = load_config(os.path.join(run_dir, "config.yaml"), [src, f"run_dir={run_dir}"])
        scorers[kind] = Scorer(cfg, run_dir, torch.device("cpu"), 0)
    out: dict = {k: {"score_s": [], "phases": []} for k in scorers}
    for i in range(repeats + 1):  # the first call of each is a warm-up
        for kind, sc in scorers.items():
            if os.path.exists(scored):
                os.remove(scored)
            sc.timer.phases = {}
            t0 = time.perf_counter()
            _, _, data = sc.score(gen)
            dt = time.perf_counter() - t0
            assert data is not None, "the scorer reused a scored shard"
            if i:
                out[kind]["score_s"].append(dt)
                out[kind]["phases"].append(dict(sc.timer.phases))
    res = {"size": size, "arch": common.arch(size), "samples_per_shard": 16, "repeats": repeats, "threads": threads}
    for kind, r in out.items():
        names = sorted({k for p in r["phases"] for k in p})
        res[kind] = {
            "score_s_median": common.median(r["score_s"]),
            "score_s_best": min(r["score_s"]),
            "phases_median": {k: common.median([p.get(k, 0.0) for p in r["phases"]]) for k in names},
            "score_s": r["score_s"],
        }
    res["function_over_model"] = res["function"]["score_s_median"] / res["model"]["score_s_median"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(common.SIZES), choices=list(common.SIZES))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=common.THREADS)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    wd = args.workdir or tempfile.mkdtemp(prefix="bench_score_")
    res = {"machine": common.machine(), "sizes": {s: measure(s, args.repeats, wd, args.threads) for s in args.sizes}}
    for s, r in res["sizes"].items():
        f, m = r["function"], r["model"]
        print(
            f"[score] {s}: function {1e3 * f['score_s_median']:.1f} ms/shard (best {1e3 * f['score_s_best']:.1f}), "
            f"model {1e3 * m['score_s_median']:.1f} ms/shard (best {1e3 * m['score_s_best']:.1f}); "
            f"reward part: function {1e3 * f['phases_median'].get('compute/reward_sources', 0):.2f} ms, "
            f"reference(+model) forward: function {1e3 * f['phases_median'].get('compute/score', 0):.1f} ms, "
            f"model {1e3 * m['phases_median'].get('compute/score', 0):.1f} ms",
            flush=True,
        )
    print(
        json.dumps({s: {k: v for k, v in r.items() if k not in ("function", "model")} for s, r in res["sizes"].items()})
    )
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
