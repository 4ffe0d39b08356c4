"""docs/performance.md from the results of tools/bench/run_all.py (performance.json).

    from report import markdown      # tools/bench on sys.path, as run_all.py has it
    text = markdown(res)             # res: performance.json's content

One section per part present in `res` (a part that is missing is left out); the critic-free
sections come from md_critic_free.py.
"""

from __future__ import annotations

import common
import md_critic_free


def _f(x, nd=2) -> str:
    return f"{x:.{nd}f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    L = [
        "# Performance",
        "",
        "Measured by `python tools/bench/run_all.py` (JSON: [performance.json](performance.json)); the tables",
        "below are rewritten by it (`--from-json F --notes N` rewrites them from saved results). The machine",
        "below is shared with other jobs: ratios come from runs alternated side by side (A B C A B C ...),",
        "medians over runs and best runs.",
        "",
        *(
            [
                "Parts measured in separate runs of the parts' scripts: "
                + "; ".join(f"{k}: {v}" for k, v in res["runs"].items())
                + ".",
                "",
            ]
            if res.get("runs")
            else []
        ),
        *(
            [
                "Parts kept from an earlier run (not measured by the run named below): "
                + "; ".join(f"{k}: {v}" for k, v in res["carried"].items())
                + ".",
                "",
            ]
            if res.get("carried")
            else []
        ),
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']} "
        f"({m['torch_cpu_capability']}); load average at start {', '.join(_f(x) for x in m['loadavg_at_start'])}; "
        f"{m['date']}. fp32 matmul peak measured at the start of the run: "
        f"{_f(res.get('peak_gflops', {}).get('2', 0), 1)} GFLOP/s on 2 threads, "
        f"{_f(res.get('peak_gflops', {}).get('1', 0), 1)} on 1.",
        "",
    ]
    c = res.get("compare")
    if c:
        L += [
            "## Against TRL's PPOTrainer",
            "",
            "Workload (both sides): four randomly initialised Llama-style models in fp32 (policy, frozen reference",
            "copy, value and reward as 1-label sequence classifiers; heads = hidden/32, SwiGLU 4x, untied",
            "embeddings), a 512-token word-level vocabulary, 16 prompts of 32 tokens per step, 32 generated tokens",
            "per sample, minibatch 4, 2 torch threads, one warm-up step then 10 timed steps. TRL 1.12.0",
            "(`trl.experimental.ppo.PPOTrainer`, bf16 and gradient checkpointing off) in `.venv-trl`; ours",
            "single rank (`runtime.launcher=none`, shards and weights still go through files, fsynced).",
            f"{c['rounds']} rounds per size.",
            "",
            "Medians over the rounds, and the best round of each side (the least disturbed by other jobs on the",
            "shared machine: TRL's 2-thread OpenMP kernels slow down far more than ours when the second core is",
            "busy, so the median ratios grow with the machine's load; the best-of-rounds ratios are the",
            "conservative ones).",
            "",
            "| size | epochs | ours samples/s | TRL samples/s | TRL without gc | ours / TRL | ours / TRL without gc "
            "| best rounds: ours / TRL | best: ours / TRL without gc | ours s/step | TRL s/step | TRL gc s/step |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in c["sizes"].values():
            a, s, st = r["arch"], r["samples_per_s_median"], r["step_s_median"]
            best = {k: max(x["samples_per_s"] for x in v) for k, v in r["runs"].items()}
            L.append(
                f"| hidden {a['hidden_size']} / {a['num_layers']} layers | {a['epochs']} | {_f(s['ours'])} | "
                f"{_f(s['trl'])} | {_f(s['trl_nogc'])} | {_f(r['ratio_vs_trl'])}x | "
                f"{_f(r['ratio_vs_trl_nogc'])}x | **{_f(best['ours'] / best['trl'])}x** | "
                f"**{_f(best['ours'] / best['trl_nogc'])}x** | {_f(st['ours'], 3)} | {_f(st['trl'], 3)} | "
                f"{_f(r['trl_gc_s_per_step_median'], 3)} |"
            )
        L.append("")
        L.append(
            "Samples/s per run, in run order (ours, TRL, TRL without gc per round): "
            + "; ".join(
                f"{size}: "
                + ", ".join(
                    "/".join(_f(r["runs"][k][i]["samples_per_s"], 1) for k in ("ours", "trl", "trl_nogc"))
                    for i in range(len(r["runs"]["ours"]))
                )
                for size, r in c["sizes"].items()
            )
            + "."
        )
        L.append("")
    if res.get("grpo_trl"):
        L += md_critic_free.grpo_trl(res["grpo_trl"])
    if res.get("algos"):
        L += md_critic_free.algos(res["algos"])
    if res.get("score"):
        L += md_critic_free.scoring(res["score"])
    fl = res.get("flops")
    if fl:
        L += [
            "## Training-phase FLOP utilisation",
            "",
            "Model FLOPs of the PPO epochs (forward + backward of policy and value over full sequences, as a",
            "generic trainer computes them) per second of `time/train_update_s`, over the fp32 matmul peak",
            "measured in the same process between the steps. The whole-step limit is the seconds the step's",
            "nominal FLOPs (training + old values + reference + reward + generation) take at that peak.",
            "",
            "Training seconds: the fastest of 7 steps (median in brackets); peak: the highest of 7 bursts",
            "measured between those steps (median in brackets); utilisation = model FLOPs / fastest step / highest",
            "peak (median-based in brackets). The lean forward executes fewer FLOPs than it is credited with",
            "(no last column, last layer only on response columns), about 10% fewer at 4 layers.",
            "",
            "| size | model FLOPs / step (training) | training s | GFLOP/s | matmul peak GFLOP/s | utilisation "
            "| optimizer s | whole-step limit s | limit samples/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size, r in fl.items():
            a = common.arch(size)
            best = r.get("train_update_s_best", r["train_update_s_median"])
            L.append(
                f"| hidden {a['hidden_size']} / {a['num_layers']} layers / {a['epochs']} epochs | "
                f"{r['train_model_flops']:.3g} | {_f(best, 3)} ({_f(r['train_update_s_median'], 3)}) | "
                f"{_f(r['train_gflops'], 1)} | {_f(r['matmul_peak_gflops'], 1)} "
                f"({_f(r.get('matmul_peak_gflops_median', r['matmul_peak_gflops']), 1)}) | "
                f"**{_f(100 * r['train_utilisation'], 0)}%** "
                f"({_f(100 * r.get('train_utilisation_median', r['train_utilisation']), 0)}%) | "
                f"{_f(r['train_optim_s_median'], 3)} | {_f(r['step_limit_s'], 3)} | {_f(r['limit_samples_per_s'], 1)} |"
            )
        L.append("")
    e = res.get("e2e")
    if e:
        L += [
            "## End-to-end throughput, phases and layouts",
            "",
            "Seconds per step are between the trainer's metrics.jsonl timestamps (10 timed steps, median).",
            "Generated tokens/s = samples/s x 32; trained tokens/s = samples/s x 32 response tokens x epochs.",
            "Phase seconds per step are sums over the role's phases (HPC_RLHF_TIMING=1 phase logs); in the",
            "multi-rank layouts the roles overlap, so they do not add up to a step. `1+1+1` = one generator, one",
            "scorer, one trainer (mpiexec, 3 ranks sharing 2 cores, 1 thread each, 4 shards per step).",
            "",
            "| size | layout | lag | samples/s | s/step | gen tok/s | trained tok/s | generate | score | value fwd "
            "| train fwd/bwd | optimizer | shard I/O | weights+log I/O | trainer waiting |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size, runs in e["sizes"].items():
            a = common.arch(size)
            for r in runs.values():
                ph: dict[str, float] = {}
                for role in r["roles"].values():
                    for k, v in role["phase_s_per_step"].items():
                        ph[k] = ph.get(k, 0.0) + v
                L.append(
                    f"| {a['hidden_size']}/{a['num_layers']}/{a['epochs']}ep | {r['layout']} | {r['max_policy_lag']} | "
                    f"{_f(r['samples_per_s'])} | {_f(r['step_s_median'], 3)} | {_f(r['generated_tokens_per_s'], 0)} | "
                    f"{_f(r['trained_tokens_per_s'], 0)} | {_f(ph.get('compute/generate', 0), 3)} | "
                    f"{_f(ph.get('compute/score', 0), 3)} | {_f(ph.get('compute/value_fwd', 0), 3)} | "
                    f"{_f(ph.get('compute/train_fwd_bwd', 0), 3)} | {_f(ph.get('compute/optimizer', 0), 3)} | "
                    f"{_f(r['shard_io_s_per_step'], 3)} | "
                    f"{_f(ph.get('io/publish', 0) + ph.get('io/load_weights', 0), 3)} | "
                    f"{_f(ph.get('wait/scored', 0), 3)} |"
                )
        L += [
            "",
            "### Where each role's wall time goes (multi-rank layouts)",
            "",
            "Share of each rank's wall time over the timed steps: computing, file I/O (shards, weights, metrics,",
            "checkpoints), waiting for another rank (weights, shards, scored shards, all-reduce), other (Python",
            "bookkeeping between phases, messages).",
            "",
            "| size | layout | lag | role | compute | I/O | waiting | other |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size, runs in e["sizes"].items():
            a = common.arch(size)
            for r in runs.values():
                if r["layout"] != "1+1+1":
                    continue
                for role, s in r["roles"].items():
                    L.append(
                        f"| {a['hidden_size']}/{a['num_layers']} | {r['layout']} | {r['max_policy_lag']} | {role} | "
                        f"{_f(100 * s['compute_share'], 0)}% | {_f(100 * s['io_share'], 0)}% | "
                        f"{_f(100 * s['wait_share'], 0)}% | {_f(100 * s['other_share'], 0)}% |"
                    )
        d = e.get("demo_size")
        if d:
            L += [
                "",
                f"Demo size (configs/demo.yaml, 1+1+1, 64 samples x 16 tokens per step, 1 shard): "
                f"{_f(d['step_s_median'], 3)} s per PPO step, {_f(d['samples_per_s'], 1)} samples/s; shard I/O "
                f"(generator writes, scorer reads and writes, trainer reads) {_f(d['shard_io_s_per_step'], 4)} s "
                f"per step = **{_f(100 * d['shard_io_share_of_step'], 1)}%** of a step.",
            ]
        L.append("")
    io = res.get("io")
    if io:
        ck = io["checkpoint"]
        L += [
            "## Checkpoints and shards",
            "",
            f"Checkpoint of the hidden 256 / 4 layers trainer (policy, value, both AdamW states: "
            f"{ck['tensor_bytes'] / 1e6:.1f} MB of tensors, {ck['checkpoint_bytes'] / 1e6:.1f} MB on disk):",
            "",
            "| | checkpoint | plain safetensors | ratio |",
            "|---|---|---|---|",
            f"| save (s) | {_f(ck['checkpoint_save_s'], 3)} | {_f(ck['plain_safetensors_save_s'], 3)} | "
            f"**{_f(ck['save_ratio'])}x** |",
            f"| load (s) | {_f(ck['checkpoint_load_s'], 3)} | {_f(ck['plain_safetensors_load_s'], 3)} | "
            f"{_f(ck['load_ratio'])}x |",
            "",
            "Shards (`write_shard`/`read_shard` vs the same bytes written to one file with a tmp name and a",
            "rename, and read back), by compression. Shards are not fsynced as they are written (a checkpoint",
            "syncs the steps it covers, docs/checkpointing.md); the last columns give the write with",
            "`checkpoint.sync_rollouts=every_shard` (fsync of the file and of the rename) against the plain write",
            "with the same fsyncs.",
            "",
            "| shard | payload | compression | file bytes | write ms | write MB/s | plain write MB/s | read ms "
            "| read MB/s | plain read MB/s | fsynced write ms | fsynced plain write ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in io["shards"].items():
            for comp in ("None", "lzf", "gzip"):
                x = r[comp]
                dur = (
                    f"{_f(1e3 * x['shard_write_durable_s'], 2)} | {_f(1e3 * x['plain_write_durable_s'], 2)}"
                    if "shard_write_durable_s" in x
                    else "- | -"
                )
                L.append(
                    f"| {name} | {r['payload_bytes']} | {comp.lower()} | {x['file_bytes']} | "
                    f"{_f(1e3 * x['shard_write_s'], 2)} | {_f(x['shard_write_MBps'], 1)} | "
                    f"{_f(x['plain_write_MBps'], 1)} | {_f(1e3 * x['shard_read_s'], 2)} | "
                    f"{_f(x['shard_read_MBps'], 1)} | {_f(x['plain_read_MBps'], 1)} | {dur} |"
                )
        L.append("")
    notes = res.get("notes")
    if notes:
        L += ["## Notes", "", notes.strip(), ""]
    demo = res.get("demo")
    L += ["## Demo", ""]
    if demo:
        L += [
            f"`hpc-rlhf demo run_dir={demo['run_dir']}` (default config: {demo['steps']} PPO steps, layout "
            f"{demo['layout']}): wall_s **{_f(demo['wall_s'], 1)}** (reward-model stage, PPO, evaluation), "
            f"step_s_median **{_f(demo['step_s_median'], 3)}** s per PPO step, PPO wall {_f(demo['ppo_wall_s'], 1)} s; "
            f"gold reward {_f(demo['gold_reward_initial'], 3)} -> {_f(demo['gold_reward_final'], 3)}, "
            f"reward-model pairwise accuracy {_f(demo['rm_pairwise_accuracy'], 3)}.",
        ]
    else:
        L += ["(not run: `python tools/bench/run_all.py` without --quick runs it)"]
    L.append("")
    return "\n".join(L)
