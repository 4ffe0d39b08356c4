"""The largest Llama-shaped model that completes PPO steps on this machine, per setting, as JSON.

    PYTHONPATH=$PWD python tools/bench/largest_model.py [--settings none fsdp lora ...] \
        [--fit-hidden 384 512 640] [--budget-gib 20] [--verify [--verify-offset 1]] [--work /tmp]

For each setting (train.sharding none / fsdp, activation checkpointing off / on, LoRA; layout 1+1+2,
fp32) it runs tools/bench/memory.py's measurement (2 PPO steps of configs/tiny.yaml, a checkpoint at
the end, every rank's VmHWM polled from /proc) at the --fit-hidden sizes of one Llama family
(`shape`: hidden h, h/64 layers and heads, intermediate 4h, so about h^3/4 parameters), fits
bytes = a + b * params to the SUM of the ranks' peaks (the machine's need) and to the largest
rank's, and predicts the largest member whose sum fits in --budget-gib. With --verify it then runs
that member (--verify-offset -1 / 1: the one below / above it) inside a memory cgroup capped at the
budget, so that an overshoot kills only the probe (cgroup_cap.py: v2 or v1, a child of this
process's own cgroup, root needed, removed afterwards). A verification waits (--retries times,
--retry-wait-s apart) for MemAvailable above the predicted use plus --headroom-gib, else is
reported as not run.

The workload is deliberately tiny (4 prompts x 2 samples of 8 new tokens, 1 epoch, minibatch 4,
1 torch thread per rank): the states (weights, gradients, AdamW moments) dominate, activations are
small. fp32 only: train.precision=bf16 keeps fp32 master weights and AdamW moments on the train
ranks, and was left out to keep the probes few on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory  # noqa: E402

GIB = 2**30
SETTINGS = {
    "none": [],
    "none+ac": ["train.activation_checkpointing=true"],
    "fsdp": ["train.sharding=fsdp"],
    "fsdp+ac": ["train.sharding=fsdp", "train.activation_checkpointing=true"],
    "lora": ["model.lora.r=16"],
    "lora+ac": ["model.lora.r=16", "train.activation_checkpointing=true"],
}
WORKLOAD = [
    "generate.prompts_per_step=4",
    "generate.samples_per_prompt=2",
    "generate.max_new_tokens=8",
    "generate.shards_per_step=2",
    "ppo.epochs=1",
    "ppo.minibatch_size=4",
    "runtime.torch_threads=1",
]


def shape(hidden: int) -> tuple[int, int, int]:
    """The family's (hidden, layers, intermediate): memory.py's 768/12/3072 scaled, hidden a multiple of 64."""
    if hidden % 64 or hidden < 64:
        raise ValueError(f"hidden must be a positive multiple of 64, got {hidden}")
    return hidden, hidden // 64, 4 * hidden


def params(hidden: int, vocab: int) -> int:
    """Parameters of the family's policy at `hidden` (untied embeddings, as configs/tiny.yaml builds it)."""
    h, layers, inter = shape(hidden)
    return memory.policy_params(h, layers, inter, vocab, tied=False)


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (a, b) of bytes = a + b * params over (params, bytes) points (at least two sizes)."""
    n = len(points)
    if n < 2 or len({p for p, _ in points}) < 2:
        raise ValueError("fit needs at least two different sizes")
    mx = sum(p for p, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((p - mx) * (y - my) for p, y in points) / sum((p - mx) ** 2 for p, _ in points)
    return my - b * mx, b


def largest_fitting(a: float, b: float, budget_bytes: float, vocab: int, max_hidden: int = 8192) -> int | None:
    """The largest family hidden size whose predicted bytes a + b * params fit in budget_bytes (None: not even 64)."""
    best = None
    for h in range(64, max_hidden + 1, 64):
        if a + b * params(h, vocab) <= budget_bytes:
            best = h
    return best


def vocab_of(n_params: int, hidden: int) -> int:
    """The vocabulary size behind a measured parameter count (memory.py reports params, not the vocabulary)."""
    h, layers, inter = shape(hidden)
    body = memory.policy_params(h, layers, inter, 0, tied=False)
    vocab, rest = divmod(n_params - body, 2 * h)
    if rest:
        raise ValueError(f"{n_params} parameters do not match hidden {hidden}")
    return vocab


def run_point(hidden: int, overrides: list[str], args: argparse.Namespace) -> dict:
    """memory.py's measurement of one size: per rank peaks, their sum and maximum in bytes."""
    h, layers, inter = shape(hidden)
    ns = argparse.Namespace(
        layout=args.layout,
        steps=args.steps,
        hidden=h,
        layers=layers,
        intermediate=inter,
        work=args.work,
        poll_s=args.poll_s,
        keep=False,
        overrides=[*WORKLOAD, *overrides],
    )
    t0 = time.time()
    r = memory.measure(ns)
    peaks = [v["peak_rss_mib"] * 2**20 for v in r["ranks"].values()]
    return {
        "hidden": h,
        "layers": layers,
        "intermediate": inter,
        "policy_params": r["policy_params"],
        "rank_peak_mib": [v["peak_rss_mib"] for v in r["ranks"].values()],
        "roles": [v["role"] for v in r["ranks"].values()],
        "sum_bytes": sum(peaks),
        "max_bytes": max(peaks),
        "wall_s": round(time.time() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--fit-hidden", nargs="+", type=int, default=[384, 512, 640], help="family sizes to fit on")
    ap.add_argument("--budget-gib", type=float, default=20.0, help="memory the job may use (all ranks)")
    ap.add_argument("--verify", action="store_true", help="run the predicted size under a cgroup cap")
    ap.add_argument(
        "--verify-offset", type=int, default=0, help="verify this many family sizes (64 hidden each) off the prediction"
    )
    ap.add_argument("--headroom-gib", type=float, default=1.0, help="MemAvailable needed beyond the predicted use")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--retry-wait-s", type=float, default=120.0)
    ap.add_argument("--layout", default="1+1+2")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--work", default=tempfile.gettempdir())
    ap.add_argument("--poll-s", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="also write the JSON here (rewritten after each setting)")
    args = ap.parse_args()
    import cgroup_cap  # the verification's cap; imported here so the pure functions above need no root

    budget = args.budget_gib * GIB
    out: dict = {"budget_gib": args.budget_gib, "layout": args.layout, "workload": WORKLOAD, "settings": {}}
    out["command"] = "python tools/bench/largest_model.py " + " ".join(sys.argv[1:])
    for name in args.settings:
        try:
            pts = [run_point(h, SETTINGS[name], args) for h in args.fit_hidden]
        except SystemExit as e:  # memory.measure exits when a run fails: report it, go on
            out["settings"][name] = {"error": str(e)}
            continue
        vocab = vocab_of(pts[0]["policy_params"], pts[0]["hidden"])
        a, b = fit([(p["policy_params"], p["sum_bytes"]) for p in pts])
        am, bm = fit([(p["policy_params"], p["max_bytes"]) for p in pts])
        best = largest_fitting(a, b, budget, vocab)
        res = {
            "points": pts,
            "sum_fit": {"a_mib": round(a / 2**20, 1), "b_per_param": round(b, 2)},
            "max_rank_fit": {"a_mib": round(am / 2**20, 1), "b_per_param": round(bm, 2)},
            "predicted_hidden": best,
            "predicted_params": params(best, vocab) if best else None,
        }
        if args.verify and best:
            h = best + 64 * args.verify_offset
            pred = a + b * params(h, vocab)
            res["verify"] = cgroup_cap.verify(
                lambda h=h, o=SETTINGS[name]: run_point(h, o, args), f"largest-model-{os.getpid()}", budget, pred, args
            )
            res["verify"].update(hidden=h, predicted_sum_gib=round(pred / GIB, 2))
        out["settings"][name] = res
        print(json.dumps({name: res}), file=sys.stderr, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
