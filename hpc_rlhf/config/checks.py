"""Cross-field checks of a config, all in one place: `validate(cfg)` runs once, when a config is loaded.

Each failure is a ConfigError of one line naming the key, what is wrong and what is valid; a bad Slurm
shape or reward-model value fails at load time, before anything is written or queued.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from typing import Any

from hpc_rlhf.config.checks_slurm import validate_slurm
from hpc_rlhf.config.schema import REWARD_FUNCTION_ARGS, REWARD_FUNCTION_KEYWORDS, Config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.errors import check_key as _check
from hpc_rlhf.plugins import load_callable, load_function


def _validate_rm(cfg: Config) -> None:
    """The reward-model stage's values (`hpc-rlhf train-rm`, the demo's first stage)."""
    r = cfg.rm
    _check(r.batch_size >= 1, "rm.batch_size", "must be >= 1")
    _check(r.epochs >= 0, "rm.epochs", "must be >= 0")
    _check(0 <= r.heldout_frac < 1, "rm.heldout_frac", "must be in [0, 1) (the rest of the pairs trains)")
    _check(0 <= r.label_noise <= 1, "rm.label_noise", "must be in [0, 1]")
    _check(r.num_pairs >= 2, "rm.num_pairs", "must be >= 2 (one held out, one to train on)")
    _check(r.ranks >= 1, "rm.ranks", "must be >= 1")


def _validate_sft(cfg: Config) -> None:
    """The SFT stage's values (`hpc-rlhf sft`); its data file is read (and its rows checked) by
    launch/prepare.py before any rank starts or any job is queued."""
    s = cfg.sft
    for key in ("batch_size", "max_len", "ranks"):
        _check(getattr(s, key) >= 1, f"sft.{key}", "must be >= 1")
    _check(s.epochs >= 0, "sft.epochs", "must be >= 0")
    _check(s.lr > 0, "sft.lr", "must be > 0")
    _check(s.max_grad_norm >= 0, "sft.max_grad_norm", "must be >= 0 (0 = off)")
    _check(
        s.messages_column is None or s.chat_template,
        "sft.chat_template",
        "must be true when sft.messages_column is set (chat conversations are rendered with the template)",
    )
    if cfg.stage == "sft":
        _check(s.data_path is not None, "sft.data_path", "must be set for `hpc-rlhf sft`: a JSONL, Parquet or CSV file")


def _validate_runtime(cfg: Config) -> None:
    rt = cfg.runtime
    _check(rt.wait_timeout_s > 0, "runtime.wait_timeout_s", "must be > 0")
    _check(rt.start_timeout_s >= 0, "runtime.start_timeout_s", "must be >= 0 (0 = no deadline)")
    _check(rt.heartbeat_timeout_s >= 0, "runtime.heartbeat_timeout_s", "must be >= 0 (0 = off)")
    _check(rt.lease_ttl_s >= 1, "runtime.lease_ttl_s", "must be >= 1 (the lease is renewed every ttl/4 s)")
    _check(0 <= rt.rendezvous_port <= 65535, "runtime.rendezvous_port", "must be in [0, 65535] (0 = a free port)")


def _validate_placement(cfg: Config) -> None:
    """`placement.*` syntax and the node indices against slurm.nodes (the allocation itself, i.e. which
    ranks each node holds, is checked by cluster/topology.py at submission and at start-up)."""
    for role in ("generate", "score", "train"):
        key, value = f"placement.{role}", getattr(cfg.placement, role)
        try:
            nodes = cfg.placement.nodes(role)
        except ValueError:
            raise ConfigError(
                f"config key '{key}': '{value}' is not 'any' or distinct node indices such as 0 or 1,2"
            ) from None
        if nodes is not None and cfg.slurm.nodes > 1:
            _check(
                max(nodes) < cfg.slurm.nodes,
                key,
                f"names node {max(nodes)} but the job has slurm.nodes={cfg.slurm.nodes} (nodes 0-{cfg.slurm.nodes - 1})",
            )


def _validate_reward(cfg: Config) -> None:
    """`reward.sources`: named, weighted, at most one reward model; each function imports and takes the
    reward-function arguments (hpc_rlhf/rewards), so a bad one fails here, before any job is queued."""
    src = cfg.reward.sources
    _check(len(src) >= 1, "reward.sources", "needs at least one source, e.g. [{name: rm, kind: model}]")
    _check(sum(s.kind == "model" for s in src) <= 1, "reward.sources", "at most one source of kind=model")
    _validate_sources(src, "reward.sources")


def _validate_sources(src: list, where: str) -> None:
    """Each item of a list of reward sources (`reward.sources`, `eval.sources`) at config key `where`."""
    names = [s.name for s in src]
    for i, s in enumerate(src):
        key = f"{where}[{i}]"
        ok = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s.name) is not None
        _check(ok, f"{key}.name", f"'{s.name}' must be letters, digits and _ (it names a column)")
        _check(names.count(s.name) == 1, f"{key}.name", f"'{s.name}' names two sources; names must be unique")
        _check(math.isfinite(s.weight), f"{key}.weight", f"{s.weight} must be a finite number")
        _check(s.kind in ("model", "function"), f"{key}.kind", f"'{s.kind}' is not one of model, function")
        if s.kind == "model":
            _check(s.function is None, f"{key}.function", "must be unset for kind=model (it is model.reward_path)")
        else:
            _check(bool(s.function), f"{key}.function", "must be 'package.module:function' for kind=function")
            load_function(str(s.function), f"{key}.function", REWARD_FUNCTION_ARGS, REWARD_FUNCTION_KEYWORDS)


_ALGO_NAME = "must be the name of a registered advantage estimator (ppo, grpo, rloo, reinforce_pp, ...) or package.module:function"


def _validate_dynamic_sampling(cfg: Config) -> None:
    """algo.dynamic_sampling: a group estimator, and every refill round sampled by the step's own policy version."""
    a = cfg.algo
    _check(a.max_refill_rounds >= 0, "algo.max_refill_rounds", f"must be >= 0, got {a.max_refill_rounds}")
    if not a.dynamic_sampling:
        return
    _check(
        a.name in ("grpo", "rloo"),
        "algo.dynamic_sampling",
        f"applies to algo.name=grpo or rloo only (a refill keeps groups of non-zero reward variance; got {a.name})",
    )
    _check(
        cfg.max_policy_lag == 0,
        "algo.dynamic_sampling",
        "needs max_policy_lag=0 (a step's refill rounds sample with the step's own policy version, which a "
        f"generator running ahead no longer holds; got max_policy_lag={cfg.max_policy_lag})",
    )


def _validate_algo(cfg: Config) -> None:
    """The algorithm's values against the sampling (a group = the samples of one prompt at one step)."""
    a, n = cfg.algo, cfg.generate.samples_per_prompt
    if ":" in a.name:  # an estimator of one's own: its module imports here (and registers it)
        load_callable(a.name, "algo.name")
    else:  # a registered name: looked up (with the registered names on error) when the trainer is built
        _check(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.name) is not None, "algo.name", _ALGO_NAME)
    if a.name in ("grpo", "rloo"):
        _check(
            n >= 2,
            "generate.samples_per_prompt",
            f"must be >= 2 for algo.name={a.name} (its baseline is the other samples of the same prompt), got {n}",
        )
    _check(
        not a.drop_uniform_groups or a.name in ("grpo", "rloo"),
        "algo.drop_uniform_groups",
        f"applies to algo.name=grpo or rloo only (got {a.name})",
    )
    _validate_dynamic_sampling(cfg)
    _check(a.loss_agg_norm >= 0, "algo.loss_agg_norm", "must be >= 0 (0 = generate.max_new_tokens)")
    _check(a.kl_loss_coef >= 0, "algo.kl_loss_coef", "must be >= 0")
    _check(a.clip_low >= 0 and a.clip_high >= 0, "algo.clip_low/clip_high", "must be >= 0 (0 = the default)")
    _check(a.dual_clip == 0 or a.dual_clip > 1, "algo.dual_clip", f"must be > 1 (or 0 = off), got {a.dual_clip}")
    _check(
        not a.overlong_filter or cfg.generate.stop_at_eos,
        "algo.overlong_filter",
        "needs generate.stop_at_eos=true (without EOS every response runs to max_new_tokens and would be filtered)",
    )
    t = cfg.train
    _check(t.max_tokens_per_microbatch >= 0, "train.max_tokens_per_microbatch", "must be >= 0 (0 = off)")
    _check(
        t.max_tokens_per_microbatch == 0 or t.sharding == "none" or cfg.layout.train == 1,
        "train.max_tokens_per_microbatch",
        "with train.sharding=fsdp on several train ranks is not supported (ranks would run different numbers "
        "of micro-batches): set it to 0 or train.sharding=none",
    )
    _check(a.tis_cap == 0 or a.tis_cap >= 1, "algo.tis_cap", f"must be 0 (off) or >= 1, got {a.tis_cap}")
    _check(
        a.tis_cap == 0 or a.behavior_logprobs == "recompute",
        "algo.tis_cap",
        "weighs pi_old / pi_sampler: set algo.behavior_logprobs=recompute with it",
    )


def _validate_engine(cfg: Config) -> None:
    """generate.engine=vllm and its settings."""
    v = cfg.generate.vllm
    _check(0 < v.gpu_memory_utilization <= 1, "generate.vllm.gpu_memory_utilization", "must be in (0, 1]")
    _check(v.max_num_seqs >= 1, "generate.vllm.max_num_seqs", "must be >= 1")
    _check(
        v.tensor_parallel_size == 1,
        "generate.vllm.tensor_parallel_size",
        "only 1 for now (a new version reaches the engine in-process; several GPUs per engine are not wired)",
    )
    _check(v.cpu_kvcache_space_gb > 0, "generate.vllm.cpu_kvcache_space_gb", "must be > 0")


def _validate_task(cfg: Config) -> None:
    """Where prompts come from; the file itself is read and checked by launch/prepare.py, before any job."""
    t = cfg.task
    if t.name in ("jsonl", "dataset"):
        _check(t.prompts_path is not None, "task.prompts_path", f"must be set when task.name={t.name}")
    _check(
        t.max_prompt_tokens >= 0, "task.max_prompt_tokens", f"must be >= 0 (0 = no limit), got {t.max_prompt_tokens}"
    )
    if t.name != "dataset":
        for key, value in (
            ("chat_template", t.chat_template),
            ("label_column", t.label_column is not None),
            ("max_prompt_tokens", t.max_prompt_tokens != 0),
        ):
            _check(not value, f"task.{key}", f"applies to task.name=dataset only (got task.name={t.name})")


def _validate_lora(cfg: Config) -> None:
    """`model.lora`: a rank, a scale and module names (checked against the model when it is built:
    hpc_rlhf/models/lora.py)."""
    lo = cfg.model.lora
    _check(lo.r >= 0, "model.lora.r", f"must be >= 0 (0 = off), got {lo.r}")
    if lo.r == 0:
        return
    _check(
        importlib.util.find_spec("peft") is not None,
        "model.lora.r",
        "LoRA needs the peft package: pip install 'hpc-rlhf[lora]' (or set model.lora.r=0)",
    )
    _check(lo.alpha > 0, "model.lora.alpha", f"must be > 0, got {lo.alpha}")
    _check(
        len(lo.target_modules) >= 1,
        "model.lora.target_modules",
        "needs at least one module name, e.g. [q_proj, v_proj]",
    )
    for name in lo.target_modules:
        ok = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) is not None
        _check(ok, "model.lora.target_modules", f"'{name}' is not a module name (letters, digits, _ and .)")
    _check(
        cfg.train.sharding == "none",
        "train.sharding",
        "fsdp with LoRA (model.lora.r > 0) is not supported yet: the adapters are small, set train.sharding=none",
    )
    _check(
        cfg.train.precision == "fp32",
        "train.precision",
        "bf16 with LoRA (model.lora.r > 0) is not supported yet (the one-process run shares the fp32 base "
        "with the generator): set train.precision=fp32",
    )
    _check(
        lo.export == "merged" or cfg.model.policy_path is not None,
        "model.lora.export",
        "'adapter' needs model.policy_path (the base folder the adapters apply to); a base built from "
        "model.arch exists in no folder: use export=merged",
    )


def _validate_logging(cfg: Config) -> None:
    """An enabled tracker's package is installed (it is an optional extra)."""
    for name, on in (("wandb", cfg.logging.wandb.enabled), ("mlflow", cfg.logging.mlflow.enabled)):
        found = on and importlib.util.find_spec(name) is not None
        _check(not on or found, f"logging.{name}.enabled", f"needs the {name} package: pip install 'hpc-rlhf[{name}]'")


def _validate_eval(cfg: Config) -> None:
    """`eval.*`: evaluation during training (roles/evaluator.py); its prompt file is read by launch/prepare.py."""
    e = cfg.eval
    _check(e.every >= 0, "eval.every", f"must be >= 0 (0 = off), got {e.every}")
    if e.every == 0:
        return
    for key in ("samples_per_prompt", "max_new_tokens", "shards"):
        _check(getattr(e, key) >= 1, f"eval.{key}", f"must be >= 1, got {getattr(e, key)}")
    _check(e.num_prompts >= 0, "eval.num_prompts", f"must be >= 0 (0 = all), got {e.num_prompts}")
    _check(e.temperature >= 0, "eval.temperature", f"must be >= 0 (0 = greedy), got {e.temperature}")
    _check(
        e.temperature > 0 or e.samples_per_prompt == 1,
        "eval.samples_per_prompt",
        "must be 1 with eval.temperature=0 (greedy responses to one prompt are all the same)",
    )
    if e.task.name in ("jsonl", "dataset"):
        _check(
            e.task.prompts_path is not None, "eval.task.prompts_path", f"must be set when eval.task.name={e.task.name}"
        )
    if e.task.name == "demo" and cfg.task.name == "demo":
        _check(
            e.task.vocab_words == cfg.task.vocab_words,
            "eval.task.vocab_words",
            f"must be task.vocab_words ({cfg.task.vocab_words}): the demo's words are the run's tokenizer",
        )
    _check(
        len(e.sources) >= 1,
        "eval.sources",
        "needs at least one reward function, e.g. [{name: correct, kind: function, "
        "function: 'hpc_rlhf.rewards.builtin:exact_match'}]",
    )
    _check(sum(s.kind == "model" for s in e.sources) <= 1, "eval.sources", "at most one source of kind=model")
    _validate_sources(e.sources, "eval.sources")
    names = [s.name for s in e.sources]
    _check(
        e.pass_source in ("", *names),
        "eval.pass_source",
        f"'{e.pass_source}' is not one of the eval sources {names} (or empty: no pass@k)",
    )


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express. Returns cfg."""
    _validate_step(cfg)
    _validate_rm(cfg)
    _validate_sft(cfg)
    _validate_runtime(cfg)
    _validate_reward(cfg)
    _validate_eval(cfg)
    _validate_algo(cfg)
    _validate_lora(cfg)
    _validate_logging(cfg)
    _validate_inputs(cfg)
    validate_slurm(cfg)
    _validate_placement(cfg)
    return cfg


def _validate_step(cfg: Config) -> None:
    """The layout and what a step draws, cuts into shards and splits into minibatches."""
    for role in ("generate", "score", "train"):
        _check(getattr(cfg.layout, role) >= 1, f"layout.{role}", "needs at least 1 rank")
    _validate_engine(cfg)
    g, p = cfg.generate, cfg.ppo
    _check(cfg.total_steps >= 1, "total_steps", "must be >= 1")
    _check(cfg.max_policy_lag >= 0, "max_policy_lag", "must be >= 0")
    _check(g.prompts_per_step >= 1, "generate.prompts_per_step", "must be >= 1")
    _check(g.samples_per_prompt >= 1, "generate.samples_per_prompt", "must be >= 1")
    _check(g.max_new_tokens >= 1, "generate.max_new_tokens", "must be >= 1")
    _check(g.temperature > 0, "generate.temperature", "must be > 0")
    _check(0 < g.top_p <= 1, "generate.top_p", "must be in (0, 1]")
    _check(g.top_k >= 0, "generate.top_k", "must be >= 0 (0 = off)")
    _check(
        1 <= g.shards_per_step <= g.prompts_per_step,
        "generate.shards_per_step",
        f"must be in [1, prompts_per_step={g.prompts_per_step}]",
    )
    busy = max(cfg.layout.generate, cfg.layout.score)
    _check(
        g.shards_per_step >= busy,
        "generate.shards_per_step",
        f"must be >= {busy} (layout.generate={cfg.layout.generate}, layout.score={cfg.layout.score}) so that "
        "no generation or scoring rank idles; a multiple of both spreads the work evenly",
    )
    batch = g.prompts_per_step * g.samples_per_prompt
    _check(
        p.minibatch_size >= 1 and batch % p.minibatch_size == 0,
        "ppo.minibatch_size",
        f"must divide the step batch prompts_per_step*samples_per_prompt={batch}",
    )
    _check(
        p.minibatch_size % cfg.layout.train == 0,
        "ppo.minibatch_size",
        f"must divide by layout.train={cfg.layout.train} (each trainer takes an equal share)",
    )
    _check(p.epochs >= 1, "ppo.epochs", "must be >= 1")
    _check(0 < p.gamma <= 1, "ppo.gamma", "must be in (0, 1]")
    _check(0 <= p.lam <= 1, "ppo.lam", "must be in [0, 1]")
    _check(p.clip_ratio > 0, "ppo.clip_ratio", "must be > 0")
    _check(cfg.checkpoint.keep_last >= 2, "checkpoint.keep_last", "must be >= 2")


def _validate_inputs(cfg: Config) -> None:
    """The model built from model.arch, the prompts, and every configured path (which must exist)."""
    a = cfg.model.arch
    _check(a.hidden_size % a.num_heads == 0, "model.arch.num_heads", "must divide model.arch.hidden_size")
    _validate_task(cfg)
    _check(
        cfg.task.prompt_len_min >= 1 and cfg.task.prompt_len_max >= cfg.task.prompt_len_min,
        "task.prompt_len_max",
        "must be >= task.prompt_len_min >= 1",
    )
    _check(
        cfg.model.reward_tokenizer_path is None or cfg.model.reward_path is not None,
        "model.reward_tokenizer_path",
        "needs model.reward_path (a reward model built from model.arch reads the policy's tokens)",
    )
    paths = ("model.policy_path", "model.reward_path", "model.tokenizer_path", "model.reward_tokenizer_path")
    for key in (*paths, "task.prompts_path", "rm.pairs_path", "sft.data_path", "eval.task.prompts_path"):
        path = get_key(cfg, key)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"config key '{key}': path '{path}' does not exist; give a local folder or file")


def get_key(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
