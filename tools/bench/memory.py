"""Peak resident memory per rank and role of a short training run, as JSON.

    PYTHONPATH=$PWD python tools/bench/memory.py --layout 1+1+2 --steps 2 \
        --hidden 768 --layers 12 --intermediate 3072 [key=value ...]

Runs `hpc-rlhf train configs/tiny.yaml` (the tiny task, a Llama-shaped model of the given shape,
extra `key=value` overrides appended, e.g. train.sharding=fsdp) in a fresh RUN_DIR under --work, and
polls /proc of every rank (each rank is an mpiexec child; its PMI_RANK names it) for VmHWM, the
kernel's high-water mark of its resident set. Prints one JSON object: the policy's parameter count,
per rank {role, peak_rss_mib, bytes_per_param}, the largest train rank's peak and bytes per policy
parameter, each step's time/train_s (metrics.jsonl) and the wall time. The polling reads VmHWM, so a peak between two polls is not missed;
only growth in a rank's last poll interval before it exits is. `--keep` keeps the run (its folder is
printed as "run_dir"); `--compare-with RUN_DIR` adds the largest absolute difference between this run's
final weights and that run's ("max_abs_weight_diff"), e.g. an fsdp run against a kept unsharded one:

    PYTHONPATH=$PWD python tools/bench/memory.py --work W --keep
    PYTHONPATH=$PWD python tools/bench/memory.py --work W --compare-with W/mem-XXXX/run train.sharding=fsdp

    PYTHONPATH=$PWD python tools/bench/memory.py --activations [--batch 4 --prompt-len 128 ...]

measures activation checkpointing in one process instead: the bytes autograd saves for the backward
pass (saved-tensor hooks) and the seconds of one forward + backward, without and with it; `--matmul`
times fp32 and bf16 matmuls on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from hpc_rlhf.rundir import RunDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _rank(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return None
    if b"python" not in cmd or b"PMI_RANK" not in env:
        return None
    return int(env[b"PMI_RANK"])


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


def policy_params(hidden: int, layers: int, intermediate: int, vocab: int, tied: bool) -> int:
    """Parameters of the Llama-shaped policy (no biases, RMSNorm, full multi-head attention)."""
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    return layers * per_layer + hidden + vocab * hidden * (1 if tied else 2)


def measure(args: argparse.Namespace) -> dict:
    g, s, t = (int(x) for x in args.layout.split("+"))
    work = tempfile.mkdtemp(prefix="mem-", dir=args.work)
    run_dir = os.path.join(work, "run")
    heads = max(1, args.hidden // 64)
    over = [
        f"run_dir={run_dir}",
        f"total_steps={args.steps}",
        f"layout.generate={g}",
        f"layout.score={s}",
        f"layout.train={t}",
        f"model.arch.hidden_size={args.hidden}",
        f"model.arch.num_layers={args.layers}",
        f"model.arch.num_heads={heads}",
        f"model.arch.intermediate_size={args.intermediate}",
        f"checkpoint.every_steps={args.steps}",
        "runtime.wait_timeout_s=1200",  # a shared, loaded machine: no rank timeout
        *args.overrides,
    ]
    cmd = [sys.executable, "-m", "hpc_rlhf.launch.cli", "train", os.path.join(REPO, "configs/tiny.yaml"), *over]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            r = _rank(pid)
            if r is not None:
                peaks[r] = max(peaks.get(r, 0), _hwm_kib(pid))
        time.sleep(args.poll_s)
    log = proc.stdout.read() if proc.stdout else ""
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(log[-4000:])
        raise SystemExit(f"run failed (exit {proc.returncode}); kept {work}")
    vocab = _vocab(run_dir)
    n = policy_params(args.hidden, args.layers, args.intermediate, vocab, tied=False)
    roles = ["generate"] * g + ["score"] * s + ["train"] * t
    ranks = {
        r: {"role": roles[r], "peak_rss_mib": round(kib / 1024, 1), "bytes_per_param": round(kib * 1024 / n, 1)}
        for r, kib in sorted(peaks.items())
    }
    train_s = _train_s(run_dir)
    train_peak = max(peaks[r] for r in range(g + s, g + s + t))
    diff = {"max_abs_weight_diff": weight_diff(run_dir, args.compare_with)} if args.compare_with else {}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "layout": args.layout,
        "steps": args.steps,
        "overrides": args.overrides,
        "policy_params": n,
        "ranks": ranks,
        "train_peak_mib": round(train_peak / 1024, 1),
        "train_bytes_per_param": round(train_peak * 1024 / n, 1),
        "train_s_per_step": train_s,
        "wall_s": round(wall, 1),
        **diff,
        **({"run_dir": run_dir} if args.keep else {}),
    }


def weight_diff(run_dir: str, other: str) -> float:
    """The largest absolute difference between two runs' final policies (final/policy/model.safetensors),
    read one tensor at a time. Raises SystemExit when their tensor names differ."""
    from safetensors import safe_open

    paths = [os.path.join(RunDir(d).final_policy, "model.safetensors") for d in (run_dir, other)]
    with safe_open(paths[0], framework="pt") as a, safe_open(paths[1], framework="pt") as b:
        if set(a.keys()) != set(b.keys()):
            raise SystemExit(f"{paths[0]} and {paths[1]} hold different tensors")
        return max(float((a.get_tensor(k) - b.get_tensor(k)).abs().max()) for k in a.keys())


def _vocab(run_dir: str) -> int:
    """The tokenizer's vocabulary size, from the exported final policy's config."""
    with open(os.path.join(RunDir(run_dir).final_policy, "config.json")) as f:
        return int(json.load(f)["vocab_size"])


def _train_s(run_dir: str) -> list[float]:
    """time/train_s of each step (metrics.jsonl): read, layout, old values, advantages, updates."""
    with open(RunDir(run_dir).metrics) as f:
        return [round(json.loads(ln)["time/train_s"], 2) for ln in f if ln.strip()]


def activations(args: argparse.Namespace) -> dict:
    """Bytes the autograd graph keeps for the backward pass (saved-tensor hooks) and the seconds of
    one forward + backward of the policy's response log-probs, without and with
    train.activation_checkpointing, on --batch rows of --prompt-len + --response-len tokens."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hpc_rlhf.models.forward import checkpoint_layers, make_batch, response_logprobs

    torch.manual_seed(0)
    conf = AutoConfig.for_model(
        "llama",
        vocab_size=512,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        max_position_embeddings=args.prompt_len + args.response_len,
        tie_word_embeddings=False,
    )
    model = AutoModelForCausalLM.from_config(conf).eval()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(4, 512, args.prompt_len) for _ in range(args.batch)]
    responses = [rng.integers(4, 512, args.response_len) for _ in range(args.batch)]
    batch = make_batch(prompts, responses, 0)
    out = {}
    for name in ("off", "on"):
        if name == "on":
            checkpoint_layers(model)
        saved = [0]

        def pack(t, saved=saved):
            saved[0] += t.numel() * t.element_size()
            return t

        secs = []
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            saved[0] = 0
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                logp, _ = response_logprobs(model, batch)
            logp.sum().backward()
            secs.append(time.perf_counter() - t0)
        out[name] = {"saved_mib": round(saved[0] / 2**20, 1), "fwd_bwd_s": round(min(secs), 3)}
    return {"batch": [args.batch, args.prompt_len + args.response_len], "activation_checkpointing": out}


def matmul(args: argparse.Namespace) -> dict:
    """Best of 5 (n x n) @ (n x n) matmuls in fp32 and bf16 on one torch thread: ms and GFLOP/s."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(args.n, args.n, dtype=dt), torch.randn(args.n, args.n, dtype=dt)
        a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out[name] = {"ms": round(best * 1e3, 2), "gflops": round(2 * args.n**3 / best / 1e9, 1)}
    return {"n": args.n, "matmul": out, "bf16_speedup": round(out["fp32"]["ms"] / out["bf16"]["ms"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", default="1+1+2", help="generate+score+train ranks")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=3072)
    ap.add_argument("--work", default=tempfile.gettempdir(), help="folder for the run directory")
    ap.add_argument("--poll-s", type=float, default=0.05)
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--compare-with", metavar="RUN_DIR", help="a kept run whose final weights to compare with")
    ap.add_argument("--activations", action="store_true", help="measure activation checkpointing instead")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--response-len", type=int, default=128)
    ap.add_argument("--matmul", action="store_true", help="time fp32 and bf16 matmuls instead")
    ap.add_argument("--n", type=int, default=1024, help="matrix size of --matmul")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    run = matmul if args.matmul else activations if args.activations else measure
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
