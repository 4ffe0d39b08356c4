"""Peak memory of the single-rank loop's roles with LoRA: one base shared, or a copy per role; and full training.

    python tools/bench/lora_memory.py [--hidden 768 --layers 12 --intermediate 3072] [--out lora_memory.json]

Each case runs in a fresh process, on a Llama-shaped model built from model.arch (the demo's tokenizer,
PPO, 8 prompts x 2 samples of 16 tokens): it builds what launch/single.py builds (a Trainer, a Generator,
a Scorer) and runs one step of its loop (generate, score, train). Cases:

    full       model.lora.r=0: the generator, the reference and the trainer each hold the weights
    lora       model.lora.r=16, as launch/single.py runs it: the generator samples with the trainer's model
               and the reference is that model with its adapters disabled (models/lora.BaseView)
    lora-copy  model.lora.r=16, but the generator and the scorer build their own base (what separate
               ranks hold; here, in one process, the copies that `lora` avoids)

Then, per role of a multi-rank layout, a fresh process holds that role alone, on the `full` and `lora`
cases' run directories: `trainer` (a Trainer and one train step on the recorded scored shard), `scorer`
(a Scorer, built), `generator` (a Generator with version 0 loaded, one shard generated).

Reports per case the process's peak RSS (ru_maxrss) and its RSS after the models are built, in MiB.
The value and reward models are full models in every case (LoRA is on the policy only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = {"full": ["model.lora.r=0"], "lora": ["model.lora.r=16"], "lora-copy": ["model.lora.r=16"]}


def child(case: str, run_dir: str, arch: list[str]) -> dict:
    """In a fresh process: build the single-rank roles of `case`, run one step; RSS in MiB."""
    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.models import lora
    from hpc_rlhf.parallel.dp import DataParallel
    from hpc_rlhf.roles.generator import Generator
    from hpc_rlhf.roles.scorer import Scorer
    from hpc_rlhf.roles.trainer_loop import TrainSession

    over = [f"run_dir={run_dir}", "generate.prompts_per_step=8", "generate.max_new_tokens=16", "total_steps=1"]
    over += ["generate.shards_per_step=1", "ppo.minibatch_size=16", "ppo.epochs=1", "runtime.torch_threads=2"]
    cfg, run_dir = prepare_run(load_config(None, [*over, *arch, *CASES[case]]))
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    sess = TrainSession(cfg, run_dir, cpu, DataParallel(0, 1), lead=True, publish_files=False)
    share = case == "lora"
    gen = Generator(cfg, run_dir, cpu, 0, sess.ctx.policy if share else None)
    scorer = Scorer(cfg, run_dir, cpu, 0, lora.BaseView(sess.ctx.policy) if share else None)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gen.load_state(0, sess.versions[0])
    gpath, _, generated = gen.generate(0, 0)
    spath, _, scored = scorer.score(gpath, generated)
    sess.train_step(0, [spath], [scored])
    return {
        "case": case,
        "policy_params": sum(p.numel() for p in sess.ctx.policy.parameters()),
        "trained_params": sum(p.numel() for p in lora.trainable(sess.ctx.policy)),
        "rss_after_build_mib": built,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def role_child(role: str, run_dir: str) -> dict:
    """In a fresh process: one role of a multi-rank layout on the run directory of a single-rank case."""
    import shutil

    import torch

    from hpc_rlhf.config import load_config
    from hpc_rlhf.parallel.dp import DataParallel
    from hpc_rlhf.roles.generator import Generator
    from hpc_rlhf.roles.scorer import Scorer
    from hpc_rlhf.roles.trainer import train_step
    from hpc_rlhf.roles.trainer_context import build_context
    from hpc_rlhf.rundir import RunDir
    from hpc_rlhf.weights.publish import cpu_state

    rd = RunDir(run_dir)
    cfg = load_config(rd.config)
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    scored = rd.shard(0, 0, "scored")
    if role == "trainer":
        tr = build_context(cfg, run_dir, cpu, DataParallel(0, 1))
        built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        train_step(tr, 0, [scored])
    elif role == "scorer":
        Scorer(cfg, run_dir, cpu, 0)
        built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        gen = Generator(cfg, run_dir, cpu, 0)
        built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gen.load_state(0, cpu_state(gen.policy))
        shutil.rmtree(os.path.dirname(scored))  # generate afresh, not reuse the recorded shards
        gen.generate(0, 0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_after_build_mib": built, "peak_rss_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=3072)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, metavar=("CASE", "RUN_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--role-child", nargs=2, metavar=("ROLE", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    arch = [
        f"model.arch.hidden_size={args.hidden}",
        f"model.arch.num_layers={args.layers}",
        f"model.arch.intermediate_size={args.intermediate}",
        f"model.arch.num_heads={max(1, args.hidden // 64)}",
    ]
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], arch)))
        return
    if args.role_child:
        print(json.dumps(role_child(*args.role_child)))
        return
    work = tempfile.mkdtemp(prefix="hpc_rlhf_lora_mem_")
    results = {}
    for case in args.cases:
        cmd = [sys.executable, __file__, "--child", case, os.path.join(work, case)]
        cmd += ["--hidden", str(args.hidden), "--layers", str(args.layers), "--intermediate", str(args.intermediate)]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(results[case]), flush=True)
    for role in ("trainer", "scorer", "generator"):  # last: it deletes the shards it regenerates
        for case in [c for c in ("full", "lora") if c in args.cases]:
            cmd = [sys.executable, __file__, "--role-child", role, os.path.join(work, case)]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
            results[f"{role}:{case}"] = json.loads(out.strip().splitlines()[-1])
            print(role, case, json.dumps(results[f"{role}:{case}"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
