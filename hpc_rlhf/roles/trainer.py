"""Optimization role: one RL step (PPO, GRPO, RLOO, REINFORCE++) on a step's scored shards, data-parallel.

    tr = Trainer(cfg, run_dir, device, dp)
    metrics = tr.train_step(step, scored_paths)     # -> policy version step + 1

A step: read the scored shards (shard order), lay out the batch, compute old values (rows split
over the train ranks, then all-gathered), per-token rewards (-beta*KL + score on the last token),
GAE advantages (whitened over the whole batch) and returns; then `ppo.epochs` passes over
minibatches drawn by a permutation seeded from (seed, step, epoch). Each train rank takes an equal
slice of every minibatch; losses are normalised by the minibatch's global token count and
gradients summed, so any number of trainers computes the single-rank update (up to float order).
Old log-probs are the generation-time ones from the shard (docs/algorithms.md). A critic-free
algorithm (algo.name != ppo) builds no value model: `value`, `opt_value` and `sched_value` are None,
and no old values are computed; its advantages come from the step's groups (roles/trainer_step.py).

The math of the step is roles/trainer_step.py (no clock); `train_step` times it: the `time/*`
metrics and the phases of the HPC_RLHF_TIMING log that tools/bench reads (roles/timing.py).
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Optional

import torch

from hpc_rlhf.algo import make_kl_controller
from hpc_rlhf.checkpoint.fsdp_state import RankParts, load_model, load_optim
from hpc_rlhf.checkpoint.rank_files import CheckpointTensors
from hpc_rlhf.checkpoint.tensorfile import join_tensors
from hpc_rlhf.config import Config
from hpc_rlhf.models import lora
from hpc_rlhf.models.build import build_policy, build_value, load_tokenizer, place
from hpc_rlhf.models.forward import checkpoint_layers
from hpc_rlhf.models.generate import banned_tokens
from hpc_rlhf.parallel import fsdp
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.metrics_log import source_means
from hpc_rlhf.roles.timing import PhaseTimer, Spans
from hpc_rlhf.roles.trainer_algo import choose_algorithm
from hpc_rlhf.roles.trainer_step import (
    StepData,
    advantages,
    close_step,
    minibatch_epochs,
    old_values,
    recompute_behavior,
)
from hpc_rlhf.rollout.shard import read_shard
from hpc_rlhf.runtime.faults import maybe_fail
from hpc_rlhf.runtime.malloc import return_freed_memory
from hpc_rlhf.weights.publish import cpu_state, load_state


def _schedule(kind: str, warmup: int, total: int):
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


class Trainer:
    """A train rank's models, optimizers, LR schedulers and KL controller, and its timed RL step.
    `value`, `opt_value` and `sched_value` are None for a critic-free algorithm."""

    def __init__(self, cfg: Config, run_dir: str, device, dp: DataParallel):
        self.cfg, self.run_dir, self.device, self.dp = cfg, run_dir, device, dp
        return_freed_memory()  # freed gradients and buffers leave the resident set (runtime/malloc.py)
        self.tok = load_tokenizer(cfg, run_dir)
        policy = build_policy(cfg, self.tok, device)
        policy = lora.apply(policy, cfg) if lora.enabled(cfg) else policy  # LoRA: the adapters train
        # train.precision=bf16: fp32 masters (build_*'s default dtype), bf16 autocast (self.autocast)
        self.bf16 = cfg.train.precision == "bf16"
        pure_bf16 = cfg.runtime.bf16 and not self.bf16
        self.policy = place(policy, device, pure_bf16)
        self.algorithm = choose_algorithm(cfg)  # the registered math algo.* names (roles/trainer_algo.py)
        critic = self.algorithm.estimator.critic
        self.value = place(build_value(cfg, self.tok, device), device, pure_bf16) if critic else None
        # train.sharding=fsdp: FSDP2 shards over the train ranks (parallel/fsdp.py); one rank: unsharded
        self.sharded = cfg.train.sharding == "fsdp" and dp.size > 1
        if self.sharded:
            mesh = fsdp.train_mesh(dp.size, torch.device(device))
            for model in (self.policy, self.value):
                if model is not None:
                    fsdp.shard_model(model, mesh, bf16=self.bf16)
        # train.activation_checkpointing: each decoder layer's activations are recomputed in backward
        # (after sharding: FSDP takes the HF path)
        if cfg.train.activation_checkpointing:
            for model in (self.policy, self.value):
                if model is not None:
                    checkpoint_layers(model)
        p = cfg.ppo
        # fused AdamW: one kernel per tensor instead of a dozen (4x faster per step on CPU)
        fused = {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}
        self.opt_policy = torch.optim.AdamW(lora.trainable(self.policy), lr=p.lr, weight_decay=p.weight_decay, **fused)
        self.opt_value = (
            torch.optim.AdamW(self.value.parameters(), lr=p.value_lr, weight_decay=p.weight_decay, **fused)
            if self.value is not None
            else None
        )
        batch = cfg.generate.prompts_per_step * cfg.generate.samples_per_prompt
        updates = cfg.total_steps * p.epochs * (batch // p.minibatch_size)
        sched = _schedule(p.lr_schedule, p.warmup_steps, updates)
        self.sched_policy = torch.optim.lr_scheduler.LambdaLR(self.opt_policy, sched)
        self.sched_value = (
            torch.optim.lr_scheduler.LambdaLR(self.opt_value, sched) if self.opt_value is not None else None
        )
        self.kl_ctl = make_kl_controller(p.kl.adaptive, p.kl.init_coef, p.kl.target, p.kl.horizon)
        self.banned = banned_tokens(self.tok.pad_token_id, self.tok.eos_token_id, cfg.generate.stop_at_eos)
        self.timer = PhaseTimer(run_dir, "train", dp.rank)
        self.version = 0  # optimizer steps applied = PPO steps done
        self.last_step_data: Optional[StepData] = None  # the rollouts of the last step (ledger, hooks)

    def autocast(self) -> AbstractContextManager:
        """The context of a forward of the trained models (enter it on the thread that runs it:
        autocast is per thread): bf16 autocast under train.precision=bf16 unless FSDP casts the
        parameters itself (MixedPrecisionPolicy); otherwise nothing."""
        if self.bf16 and not self.sharded:
            return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, step: int, paths: list[str], parts: Optional[list] = None) -> dict[str, float]:
        """One RL step on the scored shards at `paths` (read here), or on `parts`, their fields as
        a read would give them, when the caller holds them (the single-rank loop). The math is
        roles/trainer_step.py; this wrapper times it: the time/* metrics and the phase log."""
        maybe_fail("train")
        t0 = time.perf_counter()
        if parts is None:
            parts = [read_shard(path)[0] for path in paths]
        t_read = time.perf_counter() - t0
        sd = StepData(parts, self.tok.pad_token_id, self.device)
        t_layout = time.perf_counter() - t0 - t_read
        recompute_behavior(self, sd)  # algo.behavior_logprobs=recompute
        values = old_values(self, sd)
        t_value = time.perf_counter() - t0 - t_read - t_layout
        tg = advantages(sd, values, self.cfg, self.kl_ctl.value)
        t_prep = time.perf_counter() - t0 - t_read  # layout + old values + advantages
        spans = Spans(self.timer)  # the optimizer steps inside each update; wait/* go to the timer
        means = minibatch_epochs(self, step, sd, tg, spans)
        t_update = time.perf_counter() - t0 - t_read - t_prep
        t_opt = spans.paired_max("optimizer/policy", "optimizer/value")  # the two models step side by side
        out = close_step(self, sd, tg, means)
        out.update(source_means(parts, [s.name for s in self.cfg.reward.sources]))
        out.update(
            {
                "time/train_read_s": t_read,
                "time/train_prep_s": t_prep,
                "time/value_fwd_s": t_value,
                "time/train_update_s": t_update,
                "time/train_optim_s": t_opt,
                "time/train_s": time.perf_counter() - t0,
            }
        )
        tm = self.timer
        tm.add("io/read_shards", t_read)
        tm.add("compute/value_fwd", t_value)
        tm.add("compute/layout", t_layout)
        tm.add("compute/advantages", t_prep - t_layout - t_value)
        tm.add("compute/train_fwd_bwd", t_update - t_opt)
        tm.add("compute/optimizer", t_opt)
        self.last_step_data = sd
        return out

    # -- state for checkpoints and publishing ------------------------------------------------------
    # With train.sharding=fsdp, policy_state is a collective of the train ranks (call it on all of
    # them): the lead gets the full state, the others empty dicts. A checkpoint gathers nothing: each
    # train rank writes its own shards (rank_parts), the lead the rest (optim_state).
    def policy_state(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """The policy's CPU tensors (weights/publish.cpu_state; copy=False: the model's own where it can)."""
        return fsdp.full_model_state(self.policy) if self.sharded else cpu_state(self.policy, copy=copy)

    def value_state(self) -> dict[str, torch.Tensor]:
        """The unsharded value model's CPU tensors, not copied where they are the model's own."""
        assert self.value is not None and not self.sharded
        return cpu_state(self.value, copy=False)

    def rank_parts(self) -> RankParts:
        """This rank's shards of policy, value and their AdamW moments (train.sharding=fsdp)."""
        parts = RankParts()
        parts.add_model("policy", self.policy)
        if self.value is not None:
            parts.add_model("value", self.value)
        for _, opt, key in self._optimizers():
            parts.add_optim(key, opt)
        return parts

    def load_weights(self, policy: dict, value: Optional[dict], what: str) -> None:
        """Load full states (an unsharded checkpoint's) into the unsharded policy and value model."""
        load_state(self.policy, policy, what)
        if value is not None:
            self.value.load_state_dict(value, strict=False)

    def load_from(self, src: CheckpointTensors, skeleton: dict) -> None:
        """Load weights and optimizer state from a checkpoint's tensors, one at a time, into this
        rank's layout (its shards, or whole models): a sharded checkpoint, or any checkpoint into
        sharded models (checkpoint/fsdp_state.py). Raises KeyError naming a missing tensor."""
        rank, ranks = (self.dp.rank, self.dp.size) if self.sharded else (0, 1)
        load_model(self.policy, src, "policy", rank, ranks)
        if self.value is not None:
            load_model(self.value, src, "value", rank, ranks)
        for _, opt, key in self._optimizers():
            fused = [g.get("fused") for g in opt.param_groups]
            load_optim(opt, skeleton[key], src, rank, ranks)
            for g, f in zip(opt.param_groups, fused):  # keep this build's kernel choice
                g["fused"] = f
        rest = {k: v for k, v in skeleton.items() if k not in ("opt_policy", "opt_value")}
        self.load_optim_state(join_tensors(rest, _Lazy(src)), models=False)

    def _optimizers(self) -> list[tuple[torch.nn.Module, torch.optim.Optimizer, str]]:
        out = [(self.policy, self.opt_policy, "opt_policy")]
        if self.value is not None and self.opt_value is not None:
            out.append((self.value, self.opt_value, "opt_value"))
        return out

    def optim_state(self) -> dict:
        """Optimizers, LR schedulers, KL controller, torch RNG; no value entries without a critic.
        Sharded: the optimizers' moments are this rank's DTensors (their parts go to rank files)."""
        out = {key: opt.state_dict() for _, opt, key in self._optimizers()}
        out["sched_policy"] = self.sched_policy.state_dict()
        if self.sched_value is not None:
            out["sched_value"] = self.sched_value.state_dict()
        return {**out, "kl_ctl": self.kl_ctl.state_dict(), "torch_rng": torch.get_rng_state()}

    def load_optim_state(self, st: dict, models: bool = True) -> None:
        """Restore `optim_state()` (models=False: all but the optimizers); raises KeyError when a value
        entry this trainer needs is missing."""
        for _, opt, key in self._optimizers() if models else []:
            fused = [g.get("fused") for g in opt.param_groups]
            opt.load_state_dict(st[key])
            for g, f in zip(opt.param_groups, fused):  # keep this build's kernel choice
                g["fused"] = f
        self.sched_policy.load_state_dict(st["sched_policy"])
        if self.sched_value is not None:
            self.sched_value.load_state_dict(st["sched_value"])
        self.kl_ctl.load_state_dict(st["kl_ctl"])
        torch.set_rng_state(st["torch_rng"])


class _Lazy(dict):
    """A checkpoint's tensors as the mapping join_tensors reads, each read when it is asked for."""

    def __init__(self, src: CheckpointTensors):
        super().__init__()
        self.src = src

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.src.full(name)
