"""Every benchmark in one command: JSON plus the markdown summary of docs/performance.md.

    python tools/bench/run_all.py                      # every part (17 min quiet before the GRPO parts)
    python tools/bench/run_all.py --quick              # 1 round of the TRL comparisons, no demo
    python tools/bench/run_all.py --skip compare e2e   # the other parts; these two kept from the last run
    python tools/bench/run_all.py --from-json docs/performance.json --add grpo_trl=G.json   # no measuring

Writes docs/performance.json (everything measured, every run) and docs/performance.md (the tables,
the machine they ran on, and the demo section), unless --out-dir says otherwise. Parts:
compare_trl.py (ours vs TRL's PPOTrainer as shipped and without gc, alternated runs),
compare_trl_grpo.py (our GRPO vs TRL's GRPOTrainer, alternated runs), algos.py (a train rank's
memory and step time, PPO vs GRPO), score_bench.py (the scorer with a reward function vs the reward
model), e2e.py (throughput, phases, layouts, policy lag, per-role shares, demo-size shard I/O),
flops.py (training FLOP utilisation vs the matmul peak measured in the same process), io_bench.py
(checkpoint and shard I/O), and the demo (`hpc-rlhf demo`: wall_s and step_s_median of its report).
TRL needs .venv-trl (see compare_trl.py).

Nothing is lost by running a part of it: a part that is skipped keeps its results (and the notes)
from the performance.json already in --out-dir, and the page names the run each part comes from.
`--add PART=F.json` takes a part from the JSON its script wrote (`--out`), e.g. a longer run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import algos  # noqa: E402
import common  # noqa: E402
import compare_trl  # noqa: E402
import compare_trl_grpo  # noqa: E402
import e2e  # noqa: E402
import flops  # noqa: E402
import io_bench  # noqa: E402
import score_bench  # noqa: E402
from report import markdown  # noqa: E402

PARTS = ["compare", "grpo_trl", "algos", "score", "flops", "e2e", "io", "demo"]


def run_demo(run_dir: str) -> dict:
    subprocess.run(["rm", "-rf", run_dir], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", "demo", f"run_dir={run_dir}", "logging.progress=false"],
        cwd=common.REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if p.returncode != 0:
        raise SystemExit(f"the demo failed ({p.returncode}):\n{p.stderr[-3000:]}")
    with open(os.path.join(run_dir, "demo_report.json")) as f:
        rep = json.load(f)
    rep["command_wall_s"] = time.perf_counter() - t0
    rep["run_dir"] = run_dir
    return rep


def measure(skip: set, rounds: int, wd: str) -> dict:
    """Run every part not in `skip`; each part's dict names the command that measured it."""
    res = {"machine": common.machine(), "workdir": wd}
    res["peak_gflops"] = {str(t): common.matmul_peak(t) for t in (2, 1)}
    print(f"[all] matmul peak {res['peak_gflops']} GFLOP/s", flush=True)
    sizes = list(common.SIZES)
    if "compare" not in skip:
        res["compare"] = compare_trl.compare(sizes, rounds, wd)
    if "grpo_trl" not in skip:
        res["grpo_trl"] = {**compare_trl_grpo.compare(sizes, rounds, wd), "machine": res["machine"]}
    if "algos" not in skip:
        res["algos"] = algos.run("large", ["ppo", "grpo"], max(2, rounds), 4)
    if "score" not in skip:
        res["score"] = {"machine": res["machine"], "sizes": {s: score_bench.measure(s, 20, wd) for s in sizes}}
    if "flops" not in skip:
        res["flops"] = {s: flops.measure(s, 7, wd) for s in sizes}
    if "e2e" not in skip:
        res["e2e"] = e2e.run(sizes, wd)
    if "io" not in skip:
        res["io"] = {"checkpoint": io_bench.checkpoint_bench(wd, 7), "shards": io_bench.shard_bench(wd, 7)}
    if "demo" not in skip:
        res["demo"] = run_demo(os.path.join(tempfile.gettempdir(), "demo_perf"))
    for part in ("grpo_trl", "algos", "score"):
        if part in res:
            res[part]["command"] = "python tools/bench/run_all.py"
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def keep_earlier(res: dict, prev: dict) -> None:
    """Parts `res` lacks (skipped this time) and the notes, from the earlier results `prev`."""
    for part in PARTS:
        if part not in res and part in prev:
            res[part] = prev[part]
            own = res[part].get("machine", {}).get("date") if isinstance(res[part], dict) else None
            when = own or prev.get("carried", {}).get(part) or prev.get("machine", {}).get("date", "an earlier run")
            res.setdefault("carried", {})[part] = when
    if "notes" not in res and "notes" in prev:
        res["notes"] = prev["notes"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(common.REPO, "docs"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the TRL comparisons")
    ap.add_argument("--quick", action="store_true", help="1 round, no demo")
    ap.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    ap.add_argument("--from-json", default=None, help="rewrite the markdown from this JSON only")
    ap.add_argument("--add", nargs="*", default=[], metavar="PART=F.json", help="a part from its script's --out")
    ap.add_argument("--notes", default=None, help="a markdown file whose text goes under '## Notes'")
    args = ap.parse_args()
    out_json = os.path.join(args.out_dir, "performance.json")
    if args.from_json:
        with open(args.from_json) as f:
            res = json.load(f)
    else:
        wd = args.workdir or tempfile.mkdtemp(prefix="bench_all_")
        skip = set(args.skip) | ({"demo"} if args.quick else set())
        res = measure(skip, 1 if args.quick else args.rounds, wd)
        if os.path.exists(out_json):
            with open(out_json) as f:
                keep_earlier(res, json.load(f))
    for item in args.add:
        part, path = item.split("=", 1)
        if part not in PARTS:
            raise SystemExit(f"--add {item}: the part must be one of {PARTS}")
        with open(path) as f:
            res[part] = json.load(f)
        res.get("carried", {}).pop(part, None)
    if args.notes:
        with open(args.notes) as f:
            res["notes"] = f.read()
    os.makedirs(args.out_dir, exist_ok=True)
    common.write_json(out_json, res)
    with open(os.path.join(args.out_dir, "performance.md"), "w") as f:
        f.write(markdown(res))
    print(f"[all] wrote {out_json} and performance.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
