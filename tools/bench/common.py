"""Shared pieces of the benchmarks in tools/bench: the workload, the machine, the matmul peak,
running our trainer, and reading its metrics and phase logs.

The workload (the issue's, both sides the same): four randomly initialised Llama-style models
(policy, frozen reference copy, value and reward as 1-label sequence classifiers), fp32, untied
embeddings, SwiGLU MLP 4x hidden, heads = hidden/32, a 512-token word-level vocabulary (4 specials
+ 508 words), 16 prompts of exactly 32 tokens per step, exactly 32 generated tokens per sample (EOS
never sampled), minibatch 4, 2 torch threads, one warm-up step then 10 timed steps.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRL_PYTHON = os.path.join(REPO, ".venv-trl", "bin", "python")

SIZES = {
    # name: (hidden, layers, ppo epochs)
    "small": (64, 2, 1),
    "large": (256, 4, 4),
}
PROMPTS_PER_STEP, PROMPT_LEN, NEW_TOKENS, MINIBATCH, VOCAB_WORDS, THREADS = 16, 32, 32, 4, 508, 2
WARMUP, TIMED = 1, 10


def arch(size: str) -> dict:
    h, layers, epochs = SIZES[size]
    return {
        "hidden_size": h,
        "num_layers": layers,
        "num_heads": h // 32,
        "intermediate_size": 4 * h,
        "max_position": 256,
        "epochs": epochs,
    }


def our_overrides(size: str, run_dir: str, layout=(1, 1, 1), single=True, lag=0, shards=1, steps=None) -> list[str]:
    """`hpc-rlhf train configs/demo.yaml` overrides that run the workload on our side."""
    a = arch(size)
    g, s, t = layout
    out = [
        f"run_dir={run_dir}",
        f"total_steps={steps or WARMUP + TIMED}",
        f"max_policy_lag={lag}",
        "task.name=demo",
        f"task.vocab_words={VOCAB_WORDS}",
        f"task.prompt_len_min={PROMPT_LEN}",
        f"task.prompt_len_max={PROMPT_LEN}",
        f"generate.prompts_per_step={PROMPTS_PER_STEP}",
        "generate.samples_per_prompt=1",
        f"generate.max_new_tokens={NEW_TOKENS}",
        "generate.stop_at_eos=false",
        f"generate.shards_per_step={shards}",
        f"ppo.minibatch_size={MINIBATCH}",
        f"ppo.epochs={a['epochs']}",
        "model.arch.model_type=llama",
        f"model.arch.hidden_size={a['hidden_size']}",
        f"model.arch.num_layers={a['num_layers']}",
        f"model.arch.num_heads={a['num_heads']}",
        f"model.arch.intermediate_size={a['intermediate_size']}",
        "model.arch.tie_embeddings=false",
        "model.value_init=policy",
        "logging.progress=false",
        "checkpoint.every_steps=0",  # TRL's side saves nothing either (save_strategy=no)
    ]
    if single:
        out += ["runtime.launcher=none", f"runtime.torch_threads={THREADS}"]
    else:
        # the ranks share the machine's cores: split the threads among them (at least 1 each)
        out += [f"layout.generate={g}", f"layout.score={s}", f"layout.train={t}", "runtime.torch_threads=0"]
    return out


def run_ours(overrides: list[str], timeout: float = 1800) -> dict:
    """Run `hpc-rlhf train` in a child process with phase timing on; return its parsed results."""
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir="))
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, HPC_RLHF_TIMING="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "hpc_rlhf.launch.cli", "train", os.path.join(REPO, "configs", "demo.yaml"), *overrides]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"our run failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return {"run_dir": run_dir, "wall_s": wall, **read_run(run_dir)}


def read_run(run_dir: str) -> dict:
    """Per-step seconds of the timed steps (between the metrics.jsonl timestamps of the warm-up step
    and the last one) and the phase logs."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        m = [json.loads(x) for x in f if x.strip()]
    stamps = [x["time_unix"] for x in m]
    step_s = [b - a for a, b in zip(stamps[WARMUP - 1 :], stamps[WARMUP:])]
    timed = m[WARMUP:]
    metric_medians = {
        k: statistics.median(x[k] for x in timed) for k in timed[0] if k.startswith("time/") and k != "time_unix"
    }
    return {"step_s": step_s, "metrics": metric_medians, "phases": read_phases(run_dir, m[WARMUP - 1]["step"])}


def read_phases(run_dir: str, after_step: int) -> dict:
    """{role_rank: {"wall_s", "phases": {name: seconds}, "compute", "io", "wait", "other"}} over the
    steps after `after_step` (the window from each role's flush of that step to its last flush)."""
    d = os.path.join(run_dir, "timing")
    out = {}
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name)) as f:
            lines = [json.loads(x) for x in f if x.strip()]
        start = [x for x in lines if x["step"] == after_step]
        rest = [x for x in lines if x["step"] > after_step]
        if not start or not rest:
            continue
        wall = rest[-1]["t1"] - start[-1]["t1"]
        phases: dict[str, float] = {}
        for x in rest:
            for k, v in x.items():
                if "/" in k:
                    phases[k] = phases.get(k, 0.0) + v
        kinds = {c: sum(v for k, v in phases.items() if k.startswith(c + "/")) for c in ("compute", "io", "wait")}
        kinds["other"] = max(0.0, wall - sum(kinds.values()))
        out[name[: -len(".jsonl")]] = {
            "wall_s": wall,
            "steps": len(rest),
            "phases": phases,
            **{f"{k}_share": v / wall if wall > 0 else 0.0 for k, v in kinds.items()},
        }
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def matmul_peak(threads: int, n: int = 1024, seconds: float = 2.0) -> float:
    """Best fp32 GFLOP/s of an n x n x n matmul on `threads` torch threads (best of ~0.2 s bursts:
    the machine is shared, the best burst is the closest to the machine's own peak)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        for _ in range(3):
            torch.mm(a, b, out=c)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            for _ in range(5):
                torch.mm(a, b, out=c)
            best = max(best, 5 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def train_flops(size: str) -> float:
    """Model FLOPs of one PPO step's training phase (the epochs over the batch): forward + backward
    (3x forward) of the policy and the value model over every full sequence (prompt + response),
    matmuls and attention, counted as a generic trainer does (TRL computes all of them)."""
    a = arch(size)
    d, n_layers, inter = a["hidden_size"], a["num_layers"], a["intermediate_size"]
    vocab = 4 + VOCAB_WORDS
    seq = PROMPT_LEN + NEW_TOKENS
    block = n_layers * (4 * d * d + 3 * d * inter)
    policy, value = block + d * vocab, block + d
    attn = n_layers * 4 * seq * d  # FLOPs per token of QK^T and AV (full, not causal-halved)
    tokens = PROMPTS_PER_STEP * seq
    forward = tokens * (2 * policy + 2 * value + 2 * attn)
    return a["epochs"] * 3 * forward


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
