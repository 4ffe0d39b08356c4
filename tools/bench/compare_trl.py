"""Side-by-side PPO throughput: this project (single rank, 2 threads) vs TRL's PPOTrainer, as shipped
and with its per-step gc.collect() calls removed, on the same workload (tools/bench/common.py).

    python tools/bench/compare_trl.py [--sizes small large] [--rounds 3] [--out results.json]

Runs are alternated (ours, TRL, TRL without gc, ours, TRL, ...), each a fresh process doing one
warm-up step and 10 timed steps; samples/s of a run = 16 * 10 / (seconds of the 10 timed steps).
Prints, per size, the median samples/s of each side over its runs and the ratios of the medians.
TRL runs in its own environment: `python -m venv .venv-trl && .venv-trl/bin/pip install
torch==2.13.0 trl==1.12.0 transformers==5.24.0` (trl 1.12.0 is the last release with PPO).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def workload_file(size: str, d: str) -> str:
    """The TRL side's inputs: our word-level tokenizer and prompts of our demo task."""
    from hpc_rlhf.demo.task import GoldTask, build_tokenizer

    tok_dir = os.path.join(d, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        build_tokenizer(common.VOCAB_WORDS, tok_dir)
    steps = common.WARMUP + common.TIMED
    task = GoldTask(0, common.VOCAB_WORDS, common.PROMPT_LEN, common.PROMPT_LEN)
    prompts = [task.prompt(i).tolist() for i in range(common.PROMPTS_PER_STEP * steps)]
    a = common.arch(size)
    path = os.path.join(d, f"workload_{size}.json")
    common.write_json(
        path,
        {
            "tokenizer": tok_dir,
            "prompts": prompts,
            "arch": {k: a[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position")},
            "epochs": a["epochs"],
            "prompts_per_step": common.PROMPTS_PER_STEP,
            "minibatch_size": common.MINIBATCH,
            "max_new_tokens": common.NEW_TOKENS,
            "steps": steps,
            "seed": 0,
        },
    )
    return path


def run_trl(workload: str, no_gc: bool) -> dict:
    if not os.path.exists(common.TRL_PYTHON):
        raise SystemExit(
            f"{common.TRL_PYTHON} not found: python -m venv .venv-trl && "
            ".venv-trl/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.24.0"
        )
    cmd = [common.TRL_PYTHON, os.path.join(common.REPO, "tools", "bench", "trl_ppo.py"), "--workload", workload]
    cmd += ["--threads", str(common.THREADS)] + (["--no-gc"] if no_gc else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=common.REPO)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{") and '"side"' in x]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"TRL run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1])
    r["step_s"] = r["step_s"][common.WARMUP : common.WARMUP + common.TIMED]
    r["gc_s_per_step"] = r["gc_s_per_step"][common.WARMUP : common.WARMUP + common.TIMED]
    return r


def samples_per_s(step_s: list[float]) -> float:
    return common.PROMPTS_PER_STEP * len(step_s) / sum(step_s)


def compare(sizes: list[str], rounds: int, workdir: str) -> dict:
    out: dict = {"rounds": rounds, "sizes": {}}
    for size in sizes:
        wl = workload_file(size, workdir)
        runs: dict[str, list[dict]] = {"ours": [], "trl": [], "trl_nogc": []}
        for r in range(rounds):
            for side in ("ours", "trl", "trl_nogc"):
                if side == "ours":
                    res = common.run_ours(common.our_overrides(size, os.path.join(workdir, f"ours_{size}")))
                    rec = {"step_s": res["step_s"], "metrics": res["metrics"], "phases": res["phases"]}
                else:
                    rec = run_trl(wl, no_gc=side == "trl_nogc")
                rec["samples_per_s"] = samples_per_s(rec["step_s"])
                runs[side].append(rec)
                print(
                    f"[compare] {size} round {r + 1}/{rounds} {side}: {rec['samples_per_s']:.2f} samples/s", flush=True
                )
        med = {k: common.median([x["samples_per_s"] for x in v]) for k, v in runs.items()}
        step_med = {k: common.median([s for x in v for s in x["step_s"]]) for k, v in runs.items()}
        gc_med = common.median([g for x in runs["trl"] for g in x["gc_s_per_step"]])
        out["sizes"][size] = {
            "arch": common.arch(size),
            "samples_per_s_median": med,
            "step_s_median": step_med,
            "ratio_vs_trl": med["ours"] / med["trl"],
            "ratio_vs_trl_nogc": med["ours"] / med["trl_nogc"],
            "trl_gc_s_per_step_median": gc_med,
            "runs": runs,
        }
        print(
            f"[compare] {size}: ours {med['ours']:.2f}, TRL {med['trl']:.2f}, TRL without gc {med['trl_nogc']:.2f} "
            f"samples/s -> {med['ours'] / med['trl']:.2f}x TRL, {med['ours'] / med['trl_nogc']:.2f}x TRL without gc",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(common.SIZES), choices=list(common.SIZES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_trl_")
    res = compare(args.sizes, args.rounds, workdir)
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
