"""Before/after: our single-rank workload run by an older source tree and by this one, alternated.

    git archive 8f4a156 | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    python tools/bench/before_after.py --old-tree /tmp/old [--sizes small large] [--rounds 2] [--out F.json]

Each run is a fresh `python -m hpc_rlhf.launch.cli train` in the tree's own folder (its package shadows
the installed one), one warm-up step and 10 timed steps (tools/bench/common.py); prints samples/s per
run, the medians and the best run of each side, and the speed-ups.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def run(old_tree: str, sizes: list[str], rounds: int, workdir: str) -> dict:
    out = {}
    for size in sizes:
        res: dict[str, list[dict]] = {"old": [], "new": []}
        for r in range(rounds):
            for side, root in (("old", os.path.abspath(old_tree)), ("new", common.REPO)):
                run_dir = os.path.join(workdir, f"ba_{side}_{size}")
                subprocess.run(["rm", "-rf", run_dir], check=True)
                ov = common.our_overrides(size, run_dir)
                cmd = [sys.executable, "-m", "hpc_rlhf.launch.cli", "train", os.path.join(root, "configs", "demo.yaml")]
                env = dict(os.environ, PYTHONPATH=root)
                p = subprocess.run([*cmd, *ov], cwd=root, env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{side} run failed ({p.returncode}):\n{p.stderr[-3000:]}")
                rr = common.read_run(run_dir)
                sps = common.PROMPTS_PER_STEP * len(rr["step_s"]) / sum(rr["step_s"])
                res[side].append({"samples_per_s": sps, "step_s": rr["step_s"], "metrics": rr["metrics"]})
                print(f"[before/after] {size} round {r + 1}/{rounds} {side}: {sps:.2f} samples/s", flush=True)
        med = {k: common.median([x["samples_per_s"] for x in v]) for k, v in res.items()}
        best = {k: max(x["samples_per_s"] for x in v) for k, v in res.items()}
        out[size] = {
            "runs": res,
            "median": med,
            "best": best,
            "speedup_median": med["new"] / med["old"],
            "speedup_best": best["new"] / best["old"],
        }
        print(
            f"[before/after] {size}: speed-up {med['new'] / med['old']:.2f}x (medians), "
            f"{best['new'] / best['old']:.2f}x (best runs)",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-tree", required=True, help="a source tree of the older version (git archive)")
    ap.add_argument("--sizes", nargs="+", default=list(common.SIZES), choices=list(common.SIZES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = run(args.old_tree, args.sizes, args.rounds, args.workdir)
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
