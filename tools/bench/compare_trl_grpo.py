"""Side-by-side GRPO throughput: this project (single rank, 2 threads) vs TRL 1.12.0's GRPOTrainer on
the same workload (tools/bench/common.py's sizes and lengths, groups of G samples, a reward function).

    python tools/bench/compare_trl_grpo.py [--sizes small large] [--rounds 4] [--threads 2] [--out results.json]
    python tools/bench/compare_trl_grpo.py --merge A.json B.json --out all.json   # runs of several invocations

Workload, both sides: 4 prompts x G=4 samples = 16 samples per step (common.py's PPO workload has 16
prompts x 1), 32-token prompts, exactly 32 new tokens (EOS never sampled), minibatch 4 samples, epochs
(TRL: num_iterations) 1 at hidden 64 / 2 layers and 4 at hidden 256 / 4 layers, lr 3e-4, clip 0.2, fp32,
2 torch threads (--threads: both sides; 1 keeps a loaded machine's descheduled OpenMP threads from
stalling every kernel). The reward is a function on both sides, the demo's gold rule on the response's
token ids (`hpc_rlhf.demo.task:gold_reward`; TRL: the same rule in tools/bench/trl_grpo.py): no reward
model and no value model on either side. Advantages (r - group mean) / (group std + eps); KL(policy ||
reference) as a k3 loss term with coefficient 0.04 (ours: algo.kl_loss=k3, kl_reward=false; TRL:
beta=0.04), so both sides run the reference model; per-token loss averaged over the minibatch's tokens
(ours: token_mean; TRL: loss_type=dapo, the same when every response has 32 tokens). What TRL does
differently is in docs/performance.md ("Against TRL's GRPOTrainer").

Runs are alternated (ours, TRL, ours, TRL, ...), each a fresh process doing one warm-up step and 10
timed steps; samples/s of a run = 16 * 10 / (seconds of the 10 timed steps). Prints, per size, the
median samples/s of each side over its runs, the ratio of the medians and the median per-round ratio,
and where each side's step goes (ours: the time/* metrics; TRL: its generate and generate-and-score
calls). TRL runs in .venv-trl: `python -m venv .venv-trl && .venv-trl/bin/pip install torch==2.13.0
trl==1.12.0 transformers==5.24.0 requests` (trl 1.12.0's GRPOTrainer imports requests, which its
package does not require; the PPO harness does not need it).
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

PROMPTS, G = 4, 4  # prompts per step x samples per prompt = common.PROMPTS_PER_STEP samples
SAMPLES = PROMPTS * G
LR, CLIP, KL_COEF = 3e-4, 0.2, 0.04
GOLD = "hpc_rlhf.demo.task:gold_reward"
OURS = [
    f"generate.prompts_per_step={PROMPTS}",
    f"generate.samples_per_prompt={G}",
    "algo.name=grpo",
    "algo.group_std=true",
    "algo.loss_agg=token_mean",
    "algo.kl_reward=false",
    "algo.kl_loss=k3",
    f"algo.kl_loss_coef={KL_COEF}",
    f"ppo.lr={LR}",
    f"ppo.clip_ratio={CLIP}",
    f"reward.sources=[{{name: gold, kind: function, function: '{GOLD}'}}]",
]


def workload_file(size: str, d: str) -> str:
    """The TRL side's inputs: our word-level tokenizer, prompts and gold words of our demo task."""
    from hpc_rlhf.demo.task import SPECIALS, GoldTask, build_tokenizer

    tok_dir = os.path.join(d, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        build_tokenizer(common.VOCAB_WORDS, tok_dir)
    steps = common.WARMUP + common.TIMED
    task = GoldTask(0, common.VOCAB_WORDS, common.PROMPT_LEN, common.PROMPT_LEN)  # seed 0: configs/demo.yaml's
    a = common.arch(size)
    path = os.path.join(d, f"grpo_workload_{size}.json")
    common.write_json(
        path,
        {
            "tokenizer": tok_dir,
            "prompts": [task.prompt(i).tolist() for i in range(PROMPTS * steps)],
            "gold_ids": [int(i) for i in task.is_gold.nonzero()[0]],
            "first_word": len(SPECIALS),
            "arch": {k: a[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position")},
            "epochs": a["epochs"],
            "samples_per_step": SAMPLES,
            "samples_per_prompt": G,
            "minibatch_size": common.MINIBATCH,
            "max_new_tokens": common.NEW_TOKENS,
            "lr": LR,
            "clip": CLIP,
            "kl_coef": KL_COEF,
            "steps": steps,
            "seed": 0,
        },
    )
    return path


def run_trl(workload: str, threads: int) -> dict:
    if not os.path.exists(common.TRL_PYTHON):
        raise SystemExit(
            f"{common.TRL_PYTHON} not found: python -m venv .venv-trl && "
            ".venv-trl/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.24.0 requests"
        )
    cmd = [common.TRL_PYTHON, os.path.join(common.REPO, "tools", "bench", "trl_grpo.py"), "--workload", workload]
    p = subprocess.run(cmd + ["--threads", str(threads)], capture_output=True, text=True, timeout=3600)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{") and '"side"' in x]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"TRL run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(lines[-1])
    timed = slice(common.WARMUP, common.WARMUP + common.TIMED)
    return {
        "step_s": r["step_s"][timed],
        "phases": {k: common.median(r[k][timed]) for k in ("generate_s", "generate_and_score_s")},
        "versions": {k: r[k] for k in ("trl", "torch", "transformers", "python", "threads")},
    }


def run_ours(size: str, workdir: str, threads: int) -> dict:
    overrides = [*common.our_overrides(size, os.path.join(workdir, f"grpo_ours_{size}")), *OURS]
    res = common.run_ours([*overrides, f"runtime.torch_threads={threads}"], timeout=3600)
    with open(os.path.join(res["run_dir"], "metrics.jsonl")) as f:
        m = [json.loads(x) for x in f if x.strip()]
    return {
        "step_s": res["step_s"],
        "phases": res["metrics"],  # medians of the time/* metrics over the timed steps
        "reward_mean": [x["score/reward_mean"] for x in m],
        "response_len_mean": [x["gen/response_len_mean"] for x in m],
    }


def step_flops(size: str) -> dict[str, float]:
    """Model FLOPs of one GRPO step of the workload, counted as a generic trainer computes them (every
    column through every layer, full attention, the output layer on the response columns only, as both
    sides do): sampling ~ one forward over the step's tokens (prefill + one column per new token), the
    reference forward, and the epochs of updates at 3x a forward each (forward + backward). TRL's extra
    old-log-probs forward is not counted: the step does not need it."""
    a = common.arch(size)
    d, n_layers, inter = a["hidden_size"], a["num_layers"], a["intermediate_size"]
    vocab = 4 + common.VOCAB_WORDS
    seq = common.PROMPT_LEN + common.NEW_TOKENS
    per_token = 2 * n_layers * (4 * d * d + 3 * d * inter) + n_layers * 4 * seq * d
    forward = SAMPLES * (seq * per_token + common.NEW_TOKENS * 2 * d * vocab)
    return {"sampling": forward, "reference": forward, "updates": 3 * a["epochs"] * forward}


def physical_limit(size: str, peak_gflops: float, step_s: dict[str, float]) -> dict:
    """The step's FLOPs at the measured matmul peak (the fastest the step could run), and how far each
    side's median step is from it; `target_step_s`: the step that 2x TRL's samples/s needs."""
    f = step_flops(size)
    total = sum(f.values())
    limit = total / (peak_gflops * 1e9)
    return {
        "flops": f,
        "gflops_per_step": total / 1e9,
        "peak_gflops": peak_gflops,
        "limit_s": limit,
        "distance": {side: s / limit for side, s in step_s.items()},
        "target_step_s": step_s["trl"] / 2,
        "target_share_of_peak": limit / (step_s["trl"] / 2),
    }


def samples_per_s(step_s: list[float]) -> float:
    return SAMPLES * len(step_s) / sum(step_s)


def summarize(size: str, runs: dict[str, list[dict]]) -> dict:
    """Medians and ratios of one size's runs ({"ours": [...], "trl": [...]}, paired by round)."""
    med = {k: common.median([x["samples_per_s"] for x in v]) for k, v in runs.items()}
    per_round = [o["samples_per_s"] / t["samples_per_s"] for o, t in zip(runs["ours"], runs["trl"])]
    phases = {side: {k: common.median([x["phases"][k] for x in v]) for k in v[0]["phases"]} for side, v in runs.items()}
    print(
        f"[grpo] {size}: ours {med['ours']:.2f}, TRL {med['trl']:.2f} samples/s -> "
        f"{med['ours'] / med['trl']:.2f}x (per-round median {common.median(per_round):.2f}x)",
        flush=True,
    )
    return {
        "arch": common.arch(size),
        "samples_per_s_median": med,
        "step_s_median": {k: common.median([s for x in v for s in x["step_s"]]) for k, v in runs.items()},
        "ratio_vs_trl": med["ours"] / med["trl"],
        "ratio_per_round": per_round,
        "ratio_per_round_median": common.median(per_round),
        "phases_median": phases,
        "runs": runs,
    }


def compare(sizes: list[str], rounds: int, workdir: str, threads: int = common.THREADS) -> dict:
    out: dict = {"rounds": rounds, "threads": threads, "prompts_per_step": PROMPTS, "samples_per_prompt": G}
    out["peak_gflops"] = common.matmul_peak(threads)
    print(f"[grpo] fp32 matmul peak on {threads} thread(s): {out['peak_gflops']:.1f} GFLOP/s", flush=True)
    out["sizes"] = {}
    for size in sizes:
        wl = workload_file(size, workdir)
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for r in range(rounds):
            for side in ("ours", "trl"):
                rec = run_ours(size, workdir, threads) if side == "ours" else run_trl(wl, threads)
                rec["samples_per_s"] = samples_per_s(rec["step_s"])
                runs[side].append(rec)
                print(f"[grpo] {size} round {r + 1}/{rounds} {side}: {rec['samples_per_s']:.2f} samples/s", flush=True)
        out["sizes"][size] = summarize(size, runs)
        add_limit(out["sizes"][size], size, out["peak_gflops"])
    return out


def add_limit(res: dict, size: str, peak_gflops: float) -> None:
    lim = res["physical_limit"] = physical_limit(size, peak_gflops, res["step_s_median"])
    print(
        f"[grpo] {size}: {lim['gflops_per_step']:.1f} GFLOP per step, {lim['limit_s']:.3f} s at the peak; ours "
        f"{lim['distance']['ours']:.2f}x, TRL {lim['distance']['trl']:.2f}x that; 2x TRL needs "
        f"{lim['target_step_s']:.3f} s ({100 * lim['target_share_of_peak']:.0f}% of the peak over the whole step)",
        flush=True,
    )


def merge(paths: list[str]) -> dict:
    """The runs of several --out files of the same settings (e.g. more rounds later) as one result."""
    parts = []
    for p in paths:
        with open(p) as f:
            parts.append(json.load(f))
    out = {k: v for k, v in parts[0].items() if k != "sizes"}
    out["merged_from"] = [{"path": p, "date": x.get("machine", {}).get("date")} for p, x in zip(paths, parts)]
    runs: dict[str, dict[str, list]] = {}
    for x in parts:
        assert x["threads"] == out["threads"], "runs with different thread counts do not merge"
        for size, r in x["sizes"].items():
            for side, v in r["runs"].items():
                runs.setdefault(size, {}).setdefault(side, []).extend(v)
    out["sizes"] = {size: summarize(size, r) for size, r in runs.items()}
    if out.get("peak_gflops"):  # the first file's peak
        for size, r in out["sizes"].items():
            add_limit(r, size, out["peak_gflops"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(common.SIZES), choices=list(common.SIZES))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=common.THREADS, help="torch threads of each side")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("--merge", nargs="+", default=None, metavar="F.json", help="no runs: merge these --out files")
    args = ap.parse_args()
    if args.merge:
        res = merge(args.merge)
    else:
        workdir = args.workdir or tempfile.mkdtemp(prefix="bench_trl_grpo_")
        machine = common.machine()
        res = {**compare(args.sizes, args.rounds, workdir, args.threads), "machine": machine}
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in res["sizes"].items()}))
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
