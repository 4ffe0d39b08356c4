"""A train rank's state, one explicit object: models, optimizers, LR schedulers, KL controller, version.

    ctx = build_context(cfg, run_dir, device, dp)    # the policy (+ value model for a critic), AdamW, ...
    with ctx.autocast(): ...                         # the forward of a trained model
    tensors = policy_state(ctx)                      # the policy's CPU tensors (publishing, checkpoints)
    load_policy(ctx, tensors, what)                  # full tensors into the unsharded policy (a resume)

The step's functions take it (roles/trainer_step.py: the math; roles/trainer.py: the timed step) and
the checkpointer saves and loads it (checkpoint/checkpointer.py reads the fields its TrainModels
protocol names). A critic-free estimator (its registration says critic=False) builds no value model:
`value`, `opt_value` and `sched_value` are None. With train.sharding=fsdp on several train ranks the
models are FSDP2-sharded (`sharded`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import torch

from hpc_rlhf.algo import KLController, make_kl_controller
from hpc_rlhf.config import Config
from hpc_rlhf.models import lora
from hpc_rlhf.models.build import build_policy, build_value, load_tokenizer, place
from hpc_rlhf.models.forward import checkpoint_layers
from hpc_rlhf.models.generate import banned_tokens
from hpc_rlhf.parallel import fsdp
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.timing import PhaseTimer
from hpc_rlhf.roles.trainer_algo import Algorithm, choose_algorithm
from hpc_rlhf.runtime.malloc import return_freed_memory
from hpc_rlhf.weights.publish import cpu_state, load_state

LRScheduler = torch.optim.lr_scheduler.LambdaLR


@dataclass
class TrainContext:
    """Everything a train rank's step reads and changes."""

    cfg: Config
    run_dir: str
    device: Any
    dp: DataParallel
    tok: Any
    """The run's tokenizer."""
    algorithm: Algorithm
    """The registered math algo.* names (roles/trainer_algo.py)."""
    policy: torch.nn.Module
    opt_policy: torch.optim.Optimizer
    sched_policy: LRScheduler
    kl_ctl: KLController
    banned: Any
    """Token ids the policy may not sample (models/generate.banned_tokens)."""
    timer: PhaseTimer
    """The HPC_RLHF_TIMING phase log of this rank."""
    bf16: bool
    """train.precision=bf16: fp32 masters, bf16 compute."""
    sharded: bool
    """train.sharding=fsdp on more than one train rank."""
    value: Optional[torch.nn.Module] = None
    opt_value: Optional[torch.optim.Optimizer] = None
    sched_value: Optional[LRScheduler] = None
    version: int = 0
    """Optimizer steps applied = RL steps done = the policy version."""

    def autocast(self) -> AbstractContextManager:
        """The context of a forward of the trained models (enter it on the thread that runs it:
        autocast is per thread): bf16 autocast under train.precision=bf16 unless FSDP casts the
        parameters itself (MixedPrecisionPolicy); otherwise nothing."""
        if self.bf16 and not self.sharded:
            return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        return nullcontext()


def build_context(cfg: Config, run_dir: str, device, dp: DataParallel) -> TrainContext:
    """Build a train rank's models (sharded over the train ranks with train.sharding=fsdp), AdamW
    optimizers, LR schedulers and KL controller; version 0."""
    return_freed_memory()  # freed gradients and buffers leave the resident set (runtime/malloc.py)
    tok = load_tokenizer(cfg, run_dir)
    algorithm = choose_algorithm(cfg)
    bf16 = cfg.train.precision == "bf16"  # fp32 masters (build_*'s default dtype), bf16 autocast
    sharded = cfg.train.sharding == "fsdp" and dp.size > 1  # FSDP2 over the train ranks; one rank: unsharded
    policy, value = _models(cfg, tok, device, dp, algorithm.estimator.critic, bf16, sharded)
    p = cfg.ppo
    # fused AdamW: one kernel per tensor instead of a dozen (4x faster per step on CPU)
    fused = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}
    opt_policy = torch.optim.AdamW(lora.trainable(policy), lr=p.lr, weight_decay=p.weight_decay, **fused)
    opt_value = None
    if value is not None:
        opt_value = torch.optim.AdamW(value.parameters(), lr=p.value_lr, weight_decay=p.weight_decay, **fused)
    batch = cfg.generate.prompts_per_step * cfg.generate.samples_per_prompt
    sched = _schedule(p.lr_schedule, p.warmup_steps, cfg.total_steps * p.epochs * (batch // p.minibatch_size))
    return TrainContext(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        dp=dp,
        tok=tok,
        algorithm=algorithm,
        policy=policy,
        opt_policy=opt_policy,
        sched_policy=LRScheduler(opt_policy, sched),
        kl_ctl=make_kl_controller(p.kl.adaptive, p.kl.init_coef, p.kl.target, p.kl.horizon),
        banned=banned_tokens(tok.pad_token_id, tok.eos_token_id, cfg.generate.stop_at_eos),
        timer=PhaseTimer(run_dir, "train", dp.rank),
        bf16=bf16,
        sharded=sharded,
        value=value,
        opt_value=opt_value,
        sched_value=LRScheduler(opt_value, sched) if opt_value is not None else None,
    )


def _models(
    cfg: Config, tok, device, dp: DataParallel, critic: bool, bf16: bool, sharded: bool
) -> tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """(policy, value model or None), placed, sharded and with activation checkpointing as configured."""
    policy = build_policy(cfg, tok, device)
    policy = lora.apply(policy, cfg) if lora.enabled(cfg) else policy  # LoRA: the adapters train
    pure_bf16 = cfg.runtime.bf16 and not bf16
    policy = place(policy, device, pure_bf16)
    value = place(build_value(cfg, tok, device), device, pure_bf16) if critic else None
    models = [m for m in (policy, value) if m is not None]
    if sharded:
        mesh = fsdp.train_mesh(dp.size, torch.device(device))
        for model in models:
            fsdp.shard_model(model, mesh, bf16=bf16)
    # train.activation_checkpointing: each decoder layer's activations are recomputed in backward
    # (after sharding: FSDP takes the HF path)
    if cfg.train.activation_checkpointing:
        for model in models:
            checkpoint_layers(model)
    return policy, value


def _schedule(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def f(n: int) -> float:
        if n < warmup:
            return (n + 1) / warmup
        frac = min(1.0, (n - warmup) / max(1, total - warmup))
        if kind == "linear":
            return 1.0 - frac
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0

    return f


def policy_state(ctx: TrainContext, copy: bool = True) -> dict[str, torch.Tensor]:
    """The policy's CPU tensors (weights/publish.cpu_state; copy=False: the model's own where it can).
    With train.sharding=fsdp a collective of the train ranks (call it on all of them): the lead gets
    the full state, the others empty dicts."""
    return fsdp.full_model_state(ctx.policy) if ctx.sharded else cpu_state(ctx.policy, copy=copy)


def value_state(ctx: TrainContext) -> Optional[dict[str, torch.Tensor]]:
    """The unsharded value model's CPU tensors, not copied where they are the model's own; None without a
    critic or when sharded (each train rank writes its shards itself)."""
    return cpu_state(ctx.value, copy=False) if ctx.value is not None and not ctx.sharded else None


def load_policy(ctx: TrainContext, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load full tensors (an unsharded checkpoint's policy) into the unsharded policy."""
    load_state(ctx.policy, tensors, what)
