"""The critic-free sections of docs/performance.md, rendered from performance.json by run_all.py.

    lines = grpo_trl(res["grpo_trl"]) + algos(res["algos"]) + scoring(res["score"])

Each takes the JSON of its script (compare_trl_grpo.py, algos.py, score_bench.py, plus the `command`
that produced it and, when run_all.py carried it over from an earlier run, that run's date) and
returns markdown lines.
"""

from __future__ import annotations

from typing import Any

import common

TARGET = 2.0  # the target: our GRPO at >= 2x TRL GRPOTrainer's samples/s at both sizes


def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def _measured(part: dict, default: str) -> str:
    m = part.get("machine", {})
    load = m.get("loadavg_at_start")
    where = f"{m.get('date', '?')}, load average {_f(load[0], 1)}" if load else m.get("date", "?")
    return f"`{part.get('command', default)}` ({where})"


def grpo_trl(c: dict[str, Any]) -> list[str]:
    L = [
        "## Against TRL's GRPOTrainer",
        "",
        f"Measured by {_measured(c, 'python tools/bench/compare_trl_grpo.py')}: "
        + ", ".join(f"{len(r['runs']['ours'])} rounds at {size}" for size, r in c["sizes"].items())
        + ",",
        "ours and TRL alternated (ours, TRL, ours, TRL, ...), each run a fresh process with one warm-up step and",
        "10 timed steps. Workload (both sides): one randomly initialised Llama-style policy of the sizes above",
        f"and its frozen reference, fp32, {c.get('threads', 2)} torch thread(s); {c['prompts_per_step']} prompts x G="
        f"{c['samples_per_prompt']} samples = 16 samples per step, 32-token prompts, exactly 32 new tokens",
        "(EOS suppressed on both sides), minibatch 4 samples, epochs = TRL's `num_iterations`, lr 3e-4,",
        "clip 0.2; the reward is a function on both sides (the demo's gold rule on the response's token ids),",
        "no reward model, no value model; advantages (r - group mean) / (group std + eps); KL as a k3 loss",
        "term, coefficient 0.04 (ours `algo.kl_loss=k3 algo.kl_reward=false`, TRL `beta=0.04`); loss = mean",
        "over the minibatch's tokens (ours `token_mean`, TRL `loss_type=dapo`: equal with fixed lengths).",
        "Ours: single rank (`runtime.launcher=none`; shards and the archive still written). TRL 1.12.0",
        "`trl.GRPOTrainer` in `.venv-trl`, bf16 and gradient checkpointing off.",
        "",
        "| size | epochs | ours samples/s | TRL samples/s | ours / TRL (medians) | per-round ratios: median "
        "(min-max) | target 2x | ours s/step | TRL s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in c["sizes"].values():
        a, s, st, pr = r["arch"], r["samples_per_s_median"], r["step_s_median"], r["ratio_per_round"]
        met = "met" if min(r["ratio_vs_trl"], r["ratio_per_round_median"]) >= TARGET else "**not met**"
        L.append(
            f"| hidden {a['hidden_size']} / {a['num_layers']} layers | {a['epochs']} | {_f(s['ours'])} | "
            f"{_f(s['trl'])} | **{_f(r['ratio_vs_trl'])}x** | {_f(r['ratio_per_round_median'])}x "
            f"({_f(min(pr))}-{_f(max(pr))}) | {met} | {_f(st['ours'], 3)} | {_f(st['trl'], 3)} |"
        )
    L += limit_lines(c)
    L += [
        "",
        "Where a step goes (medians over the runs of each side's per-step seconds). Ours, from the metrics:",
        "sampling (`time/gen_s`), scoring = reference log-probs + the reward function + the shard write",
        "(`time/score_s`), the train step (`time/train_s`: advantages, epochs of updates). TRL, timed around",
        "its own methods: `_generate` (sampling + decoding), `_generate_and_score_completions` minus that (old",
        "log-probs, reference log-probs, reward, advantages), the rest of the step (the updates).",
        "",
        "| size | ours: sampling | scoring | train step | TRL: sampling | old + ref log-probs, reward | updates |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in c["sizes"].values():
        a, o, t = r["arch"], r["phases_median"]["ours"], r["phases_median"]["trl"]
        trl_rest = r["step_s_median"]["trl"] - t["generate_and_score_s"]
        L.append(
            f"| {a['hidden_size']}/{a['num_layers']}/{a['epochs']}ep | {_f(o['time/gen_s'], 3)} | "
            f"{_f(o['time/score_s'], 3)} | {_f(o['time/train_s'], 3)} | {_f(t['generate_s'], 3)} | "
            f"{_f(t['generate_and_score_s'] - t['generate_s'], 3)} | {_f(trl_rest, 3)} |"
        )
    L += [
        "",
        "Samples/s per run, in run order (ours/TRL per round): "
        + "; ".join(
            f"{size}: "
            + ", ".join(
                f"{_f(o['samples_per_s'], 1)}/{_f(t['samples_per_s'], 1)}"
                for o, t in zip(r["runs"]["ours"], r["runs"]["trl"])
            )
            for size, r in c["sizes"].items()
        )
        + ".",
        "",
        *TRL_DIFFERS,
        "",
    ]
    return L


def limit_lines(c: dict[str, Any]) -> list[str]:
    """The distance of each side's step to its physical limit (compare_trl_grpo.physical_limit)."""
    if not all("physical_limit" in r for r in c["sizes"].values()):
        return []
    peak = c["peak_gflops"]
    L = [
        "",
        "The physical limit of a step: its model FLOPs (`compare_trl_grpo.step_flops`: sampling ~ one forward,",
        "the reference forward, the updates at 3x a forward per epoch; every column through every layer) at the",
        f"fp32 matmul peak measured at the start of the run ({_f(peak, 1)} GFLOP/s on {c.get('threads', 2)} threads,",
        "an n=1024 matmul). 2x TRL's samples/s needs half of TRL's median step, and that step would run",
        "at the given share of the peak from its first to its last instruction, token-by-token decoding included.",
        "",
        "| size | GFLOP per step | limit s/step | ours / limit | TRL / limit | 2x TRL needs s/step | share of the peak it needs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in c["sizes"].values():
        a, lim = r["arch"], r["physical_limit"]
        L.append(
            f"| hidden {a['hidden_size']} / {a['num_layers']} layers | {_f(lim['gflops_per_step'], 1)} | "
            f"{_f(lim['limit_s'], 3)} | {_f(lim['distance']['ours'])}x | {_f(lim['distance']['trl'])}x | "
            f"{_f(lim['target_step_s'], 3)} | {100 * lim['target_share_of_peak']:.0f}% |"
        )
    return L


TRL_DIFFERS = [
    "What TRL's GRPOTrainer does differently on this workload (trl 1.12.0, `trl/trainer/grpo_trainer.py`):",
    "",
    "1. *Old log-probs.* With `steps_per_generation * num_iterations` above `gradient_accumulation_steps` it",
    "   recomputes the generation batch's log-probs with an extra no-grad forward of the policy; ours keeps",
    "   the sampler's own log-probs (`gen_logprobs`, computed while sampling) as the old policy's.",
    "2. *Forwards in chunks.* The old and reference log-probs are computed `per_device_train_batch_size`",
    "   (4) rows at a time; ours runs the reference over the whole shard at once.",
    "3. *Entropy.* Every training forward also computes the per-token entropy (a logged metric), whatever",
    "   the loss uses; ours computes it only when `ppo.entropy_coef > 0`.",
    "4. *KL default.* `beta` defaults to 0.0 (no reference model loaded at all); set to 0.04 here so both",
    "   sides run the reference. With beta 0 TRL skips that forward, while our scorer still computes",
    "   `ref_logprobs` (a field of every scored shard).",
    "5. *Loss aggregation.* `dapo` divides by the active tokens of the whole generation batch per",
    "   minibatch, ours (`token_mean`) by the minibatch's own tokens: equal here (every response has 32",
    "   tokens), different with ragged lengths. TRL's advantage eps is 1e-4, ours 1e-6.",
    "6. *Generation.* Hugging Face `generate()` with a KV cache on the 16 prompts (each prompt repeated G",
    "   times), EOS and pad suppressed through `generation_kwargs`, then `batch_decode` of prompts and",
    "   completions; ours samples with its own decoder and decodes only because a reward function takes text.",
    "7. *Defaults set off.* GRPOConfig defaults to bf16 and gradient checkpointing: both off here (fp32).",
    "   GRPOTrainer calls no `gc.collect()` (PPOTrainer calls it twice a step), so there is no",
    "   without-gc variant.",
    "8. *Nothing kept.* TRL writes nothing per step (`save_strategy=no`); ours writes the generated and",
    "   the scored shard (the archive) and a metrics line every step.",
]


def algos(a: dict[str, Any]) -> list[str]:
    s, w = a["summary"], common.arch(a["size"])
    L = [
        "## PPO against the critic-free algorithms (train rank)",
        "",
        f"Measured by {_measured(a, 'python tools/bench/algos.py')}: one recorded batch of the hidden "
        f"{w['hidden_size']} / {w['num_layers']} layers / {w['epochs']} epochs workload",
        "with 4 prompts x 4 samples (16 samples, 32 new tokens, minibatch 4), and per round and algorithm,",
        "alternately, a fresh process that builds that algorithm's Trainer (what a train rank holds) and runs",
        "`train_step` on the batch after a warm-up. Peak RSS = the process's `ru_maxrss` (torch and",
        "transformers alone are ~430 MiB of it); step = `time/train_s` (read, layout, old values, advantages,",
        "the epochs of updates). The best steps are the conservative comparison on a shared machine.",
        "",
        "| algorithm | peak RSS MiB | RSS after building MiB | step s (median) | step s (best) | old-values forward s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        vf = _f(r["value_fwd_s_median"]) if r["value_fwd_s_median"] > 1e-3 else "0 (none)"
        L.append(
            f"| {name} | {r['peak_rss_mib']:.0f} | {r['rss_after_build_mib']:.0f} | {_f(r['train_s_median'])} | "
            f"{_f(r['train_s_best'])} | {vf} |"
        )
    L.append("")
    if "ppo" in s and "grpo" in s:
        p, g = s["ppo"], s["grpo"]
        L.append(
            f"Without the value model a train rank holds {p['peak_rss_mib'] - g['peak_rss_mib']:.0f} MiB less at its "
            "peak (value weights, gradients, AdamW moments and the activations of its forward/backward, which PPO "
            f"runs beside the policy's) and its step takes {_f(g['train_s_median'] / p['train_s_median'])}x the "
            "time (medians): no old-values forward, no value forward/backward/optimizer step per minibatch."
        )
    e = a.get("earlier")
    if e:
        L.append(
            f"RLOO and REINFORCE++ build the same single model (an earlier, more loaded run, {e['command']}: "
            + ", ".join(f"{k} peak RSS {v['peak_rss_mib']:.0f} MiB" for k, v in e["summary"].items())
            + ")."
        )
    return L + [""]


def scoring(sc: dict[str, Any]) -> list[str]:
    L = [
        "## Scoring: a reward function against the reward model",
        "",
        f"Measured by {_measured(sc, 'python tools/bench/score_bench.py')}: the scorer (`Scorer.score`) on",
        "one generated shard of 16 samples (4 prompts x 4, 32 + 32 tokens), in one process"
        f" ({next(iter(sc['sizes'].values())).get('threads', 2)} torch thread(s)), the",
        "two scorers alternated call by call, each differing only in `reward.sources`: the gold rule",
        "(`kind: function`: responses decoded, the function called; no reward model loaded) or the reward",
        "model (a random one of the policy's size; its forward beside the reference's with 2 threads, after",
        "it with 1). Milliseconds per shard, medians (best in brackets).",
        "",
        "| size | reward | whole score() | reference (+ reward model) forward | reward sources (decode + function) "
        "| shard read + write |",
        "|---|---|---|---|---|---|",
    ]
    for r in sc["sizes"].values():
        a = r["arch"]
        for kind in ("function", "model"):
            x, ph = r[kind], r[kind]["phases_median"]
            io = sum(v for k, v in ph.items() if k.startswith("io/"))
            L.append(
                f"| {a['hidden_size']}/{a['num_layers']} | {kind} | {_f(1e3 * x['score_s_median'], 1)} "
                f"({_f(1e3 * x['score_s_best'], 1)}) | {_f(1e3 * ph.get('compute/score', 0), 1)} | "
                f"{_f(1e3 * ph.get('compute/reward_sources', 0), 2)} | {_f(1e3 * io, 2)} |"
            )
    L.append("")
    L.append(
        "Function / model, whole scoring call: "
        + "; ".join(f"{size}: {_f(r['function_over_model'])}x" for size, r in sc["sizes"].items())
        + "."
    )
    return L + [""]
