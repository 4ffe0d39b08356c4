"""The demo, end to end: `hpc-rlhf demo [key=value ...]` (the embedded default config).

1. builds the word-level tokenizer and trains the reward model on gold-labelled pairs (with noise);
2. measures the gold reward of the initial policy on held-out prompts;
3. runs PPO as a multi-rank job (layout 1+1+1 by default, started with mpiexec);
4. measures the gold reward of RUN_DIR/final/policy (reloaded with from_pretrained) on the same
   prompts and seeds, and writes RUN_DIR/demo_report.json and RUN_DIR/demo_curves.png.

`hpc-rlhf demo --config configs/grpo.yaml` (or any `algo.name` other than ppo) is the critic-free demo:
no reward-model stage and no value model; the gold rule itself is the reward function
(hpc_rlhf.demo.task:gold_reward), and steps 2-4 are the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import torch

from hpc_rlhf.config import Config, load_config
from hpc_rlhf.demo.task import GOLD_REWARD, GoldTask, with_gold_metric
from hpc_rlhf.errors import UserError
from hpc_rlhf.models.generate import SamplingParams, sample
from hpc_rlhf.plugins import advantage_estimator
from hpc_rlhf.rollout.plan import sample_seed
from hpc_rlhf.rundir import RM_REPORT, RunDir


@torch.no_grad()
def gold_eval(cfg: Config, model, tok) -> float:
    """Mean gold reward of one sampled response per held-out prompt (fixed seeds)."""
    t = cfg.task
    task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
    prompts = [task.prompt(i, "eval") for i in range(t.num_eval_prompts)]
    seeds = [sample_seed(cfg.seed, 0, 0, i, 0x4E7A1) for i in range(len(prompts))]
    g = cfg.generate
    out = sample(
        model,
        prompts,
        seeds,
        SamplingParams(g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.stop_at_eos),
        tok.eos_token_id,
        tok.pad_token_id,
    )
    return float(np.mean([task.gold_reward(r, tok.eos_token_id) for r in out.responses]))


def _plot(metrics: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(steps, [m.get("gen/gold_reward_mean", np.nan) for m in metrics], label="gold reward (hidden rule)")
    ax[0].plot(steps, [m["score/reward_mean"] for m in metrics], label="reward-model score")
    ax[0].set_xlabel("PPO step")
    ax[0].legend()
    ax[1].plot(steps, [m["score/kl_mean"] for m in metrics], color="tab:red")
    ax[1].set_xlabel("PPO step")
    ax[1].set_ylabel("KL(policy || reference), nats/seq")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_demo(config_path: str | None, overrides: list[str]) -> int:
    from hpc_rlhf.launch.lease import owned
    from hpc_rlhf.launch.run import check_startable

    t0 = time.time()
    cfg = load_config(config_path, overrides)
    if cfg.task.name != "demo":
        raise UserError("the demo needs task.name=demo")
    cfg = with_gold_metric(cfg)  # gen/gold_reward_mean of every step in metrics.jsonl
    cfg = dataclasses.replace(cfg, run_dir=os.path.abspath(cfg.run_dir))
    check_startable(cfg)  # before the lease and the reward-model stage write anything
    with owned(cfg.run_dir, "demo", cfg.runtime.lease_ttl_s):  # the whole demo owns its run dir
        return _demo(cfg, t0)


def _demo(cfg: Config, t0: float) -> int:
    """The demo's stages on a run dir this process owns (see run_demo)."""
    from transformers import AutoModelForCausalLM

    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.run import run_local
    from hpc_rlhf.models.build import build_policy, load_tokenizer

    rd = RunDir(cfg.run_dir)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    cfg, rm = _reward_stage(cfg)
    tok = load_tokenizer(cfg, cfg.run_dir)
    gold0 = gold_eval(cfg, build_policy(cfg, tok), tok)
    print(
        f"[demo] gold reward of the initial policy: {gold0:.3f}; {cfg.algo.name} with layout "
        f"{cfg.layout.generate}+{cfg.layout.score}+{cfg.layout.train} ...",
        flush=True,
    )
    cfg, run_dir = prepare_run(cfg)
    t_ppo = time.time()
    code = run_local(cfg, run_dir)
    if code != 0:
        return code
    ppo_s = time.time() - t_ppo
    final = AutoModelForCausalLM.from_pretrained(rd.final_policy, local_files_only=True).eval()
    gold1 = gold_eval(cfg, final, tok)
    with open(rd.metrics) as f:
        metrics = [m for m in map(json.loads, filter(str.strip, f)) if "time_unix" in m]  # step lines (not eval/*)
    _plot(metrics, rd.demo_curves)
    report = {
        "gold_reward_initial": gold0,
        "gold_reward_final": gold1,
        "rm_pairwise_accuracy": rm["rm_pairwise_accuracy"],
        "kl_final": metrics[-1]["score/kl_mean"],
        "rm_reward_initial": metrics[0]["score/reward_mean"],
        "rm_reward_final": metrics[-1]["score/reward_mean"],
        "steps": len(metrics),
        "layout": f"{cfg.layout.generate}+{cfg.layout.score}+{cfg.layout.train}",
        "algo": cfg.algo.name,
        "seed": cfg.seed,
        "ppo_wall_s": ppo_s,
        "step_s_median": float(np.median([m["time/step_s"] for m in metrics])),
        "wall_s": time.time() - t0,
    }
    with open(rd.demo_report, "w") as f:
        json.dump(report, f, indent=1)
    print(f"[demo] gold reward {gold0:.3f} -> {gold1:.3f}; report: {rd.demo_report}", flush=True)
    return 0


def _reward_stage(cfg: Config) -> tuple[Config, dict]:
    """PPO: train the reward model on gold-labelled pairs (once) and score with it; critic-free: the gold
    rule itself is the reward function. Returns the config to run and the reward-model report."""
    from hpc_rlhf.stages.reward_model import train_reward_model
    from hpc_rlhf.stages.tokenizer import save_run_tokenizer

    if not advantage_estimator(cfg.algo.name).critic:
        cfg = _gold_rule_reward(cfg)
        save_run_tokenizer(cfg, cfg.run_dir)
        print(f"[demo] {cfg.algo.name} with the gold rule as the reward function (no reward model)", flush=True)
        return cfg, {"rm_pairwise_accuracy": None}
    rm_dir = RunDir(cfg.run_dir).reward_model
    if cfg.model.reward_path is None:
        if not os.path.exists(os.path.join(rm_dir, RM_REPORT)):
            print("[demo] training the reward model on gold-labelled preference pairs ...", flush=True)
            train_reward_model(cfg, cfg.run_dir, persist=False)  # no checkpoints in the PPO run dir
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, reward_path=rm_dir))
    with open(os.path.join(rm_dir, RM_REPORT)) as f:
        rm = json.load(f)
    print(f"[demo] reward model held-out pairwise accuracy {rm['rm_pairwise_accuracy']:.3f}", flush=True)
    return cfg, rm


def _gold_rule_reward(cfg: Config) -> Config:
    """`cfg` rewarded by the gold rule alone (hpc_rlhf.demo.task:gold_reward), unless the user configured
    function sources of their own; no reward model is loaded."""
    from hpc_rlhf.config import RewardConfig, RewardSourceConfig

    if all(s.kind == "function" for s in cfg.reward.sources):
        return cfg
    gold = RewardSourceConfig(name="gold", kind="function", function=GOLD_REWARD, weight=1.0)
    return dataclasses.replace(cfg, reward=RewardConfig(sources=[gold]))
