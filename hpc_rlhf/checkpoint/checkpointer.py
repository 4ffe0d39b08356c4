"""The one checkpointer: every save and load of a run's checkpoints (RL trainer, FSDP rank files, SFT and RM).

    ck = Checkpointer(run_dir, cfg)                     # keep_last and the config text, once
    info = ck.latest()                                  # the newest valid checkpoint, or None

    # the RL trainer (every train rank calls; `models` has the fields of TrainModels)
    ck.save_train(step, models, state, rank, ranks, gather)   # state: the lead's TrainState, None on the others
    st = ck.read_train(path, lazy=models.sharded)       # what it holds (ConfigError if cfg may not resume it)
    ck.restore_train(path, st, models, rank, ranks, load_policy)   # into this rank's layout, from any layout

    # a supervised stage (SFT, reward model): one model and its optimizer
    ck.save_stage(next_step, model, opt, extra)         # rank 0
    next_step, extra = ck.load_stage(path, model, opt, device)

What a train checkpoint holds and its files: checkpoint/train_state.py; a stage checkpoint's:
`load_stage`'s docstring. The layers below it: checkpoint/store.py (atomic folders committed by a
manifest written last, keep-last-K), checkpoint/rank_files.py and checkpoint/fsdp_state.py (each FSDP
rank's own shards, and loading any checkpoint into any layout one tensor at a time),
checkpoint/tensorfile.py and checkpoint/exact_json.py (tensors and the rest of a state, no pickle).
Torchtitan's CheckpointManager is the shape: the caller hands over its stateful pieces, the
checkpointer decides the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Optional, Protocol

import torch
from safetensors.torch import load_file

from hpc_rlhf.checkpoint import exact_json
from hpc_rlhf.checkpoint.fsdp_state import RankParts, load_model, load_optim
from hpc_rlhf.checkpoint.rank_files import CheckpointTensors, write_rank_file, write_rank_state
from hpc_rlhf.checkpoint.store import CheckpointInfo, find_latest, load_json, save_checkpoint
from hpc_rlhf.checkpoint.tensorfile import join_tensors, split_tensors, write_tensors
from hpc_rlhf.checkpoint.train_state import ConfigText, TrainState, load_train_state, save_train_state, unloadable
from hpc_rlhf.config import Config, check_resumable, from_dict
from hpc_rlhf.rundir import CKPT_MODEL, CKPT_OPTIM, CKPT_OPTIM_SKELETON, CKPT_STATE, CONFIG


class TrainModels(Protocol):
    """What a train rank checkpoints besides the policy versions (roles/trainer_context.TrainContext).
    `value`, `opt_value`, `sched_value` are None without a critic; `sharded`: FSDP2 over the train ranks."""

    policy: torch.nn.Module
    value: Optional[torch.nn.Module]
    opt_policy: torch.optim.Optimizer
    opt_value: Optional[torch.optim.Optimizer]
    sched_policy: Any
    sched_value: Optional[Any]
    kl_ctl: Any
    sharded: bool


class Checkpointer:
    """Saves and loads the checkpoints of one run directory (see the module doc)."""

    def __init__(self, run_dir: str, cfg: Config) -> None:
        self.run_dir, self.cfg = run_dir, cfg
        self.text = ConfigText.of(cfg)  # rendered once (OmegaConf takes ~15 ms per render)

    def latest(self) -> Optional[CheckpointInfo]:
        """The newest valid checkpoint (damaged newer ones are skipped with a warning), or None."""
        return find_latest(self.run_dir)

    # -- the RL trainer ---------------------------------------------------------------------------------------
    def save_train(
        self,
        step: int,
        models: TrainModels,
        state: Optional[TrainState] = None,
        rank: int = 0,
        ranks: int = 1,
        gather: Optional[Callable[[bytes], list[bytes]]] = None,
    ) -> None:
        """Checkpoint the train state before `step`. With sharded models a collective of the
        train ranks (gather: DataParallel.all_gather_bytes): each writes its own shards of the models and
        their AdamW moments first (checkpoint/rank_files.write_rank_state); then the lead, the rank whose
        `state` is not None (step, version, the policy and value tensors unless sharded, behaviour
        versions, ledger, data cursor), adds the optimizer state and commits the folder."""
        staged = None
        if models.sharded:
            assert gather is not None, "a sharded checkpoint is a collective"
            parts = _rank_parts(models)

            def write(folder: str) -> tuple[str, int]:
                whole = parts.whole if rank == 0 else None
                return write_rank_file(folder, rank, ranks, parts.parts, parts.shapes, whole)

            staged = write_rank_state(self.run_dir, step, rank, ranks, write, gather)
        if state is None:
            return
        full = dataclasses.replace(state, optim=optim_state(models), train_ranks=ranks if models.sharded else None)
        save_train_state(self.run_dir, full, self.text, self.cfg.checkpoint.keep_last, staged)

    def read_train(self, path: str, lazy: bool = False) -> TrainState:
        """What checkpoint `path` holds (ConfigError when this config may not resume it; CheckpointError
        when a file cannot be read). lazy (always for a sharded checkpoint): the tensors of models and
        optimizers stay in the files, read one at a time by restore_train."""
        return load_train_state(path, self.cfg, lazy=lazy)

    def restore_train(
        self,
        path: str,
        st: TrainState,
        models: TrainModels,
        rank: int,
        ranks: int,
        load_policy: Callable[[dict, str], None],
    ) -> None:
        """Load `st` (read_train) into `models`: one tensor at a time into this rank's layout when either
        side is sharded (`rank` of `ranks`: its shards; 0 of 1: whole models), else the full states, the
        policy's through `load_policy(tensors, what)`. CheckpointError naming `path` when they do not fit."""
        try:
            if st.source is not None:
                _load_from(models, st.source, st.optim, rank, ranks)
                return
            if models.value is not None and st.value is None:
                raise KeyError("no value model (value.safetensors) for algo.name=ppo")
            load_policy(st.policy, f"weights '{path}'")
            if models.value is not None:
                models.value.load_state_dict(st.value, strict=False)
            load_optim_state(models, st.optim)
        except (RuntimeError, KeyError) as e:
            raise unloadable(path, e) from None

    # -- a supervised stage -----------------------------------------------------------------------------------
    def save_stage(self, next_step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, extra: dict) -> None:
        """Commit the state before `next_step` of a supervised stage (call it on rank 0 only)."""
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        skeleton, moments = split_tensors({"opt": opt.state_dict(), "torch_rng": torch.get_rng_state()})
        state = {
            "step": next_step,
            "stage": self.cfg.stage,
            "extra": extra,
            "data_cursor": {"next_step": next_step},
            "config_fingerprint": self.text.fingerprint,
            "config": self.text.as_dict,
            "saved_unix": time.time(),
        }

        def write(folder: str) -> dict:
            hashed = {
                n: write_tensors(os.path.join(folder, n), t) for n, t in ((CKPT_MODEL, tensors), (CKPT_OPTIM, moments))
            }
            with open(os.path.join(folder, CKPT_OPTIM_SKELETON), "w") as f:
                f.write(exact_json.dumps(skeleton))
            with open(os.path.join(folder, CKPT_STATE), "w") as f:
                json.dump(state, f, indent=1)
            with open(os.path.join(folder, CONFIG), "w") as f:
                f.write(self.text.yaml)
            return hashed

        save_checkpoint(self.run_dir, next_step, write, self.cfg.checkpoint.keep_last)

    def load_stage(
        self, path: str, model: torch.nn.Module, opt: torch.optim.Optimizer, device: Any
    ) -> tuple[int, dict[str, Any]]:
        """Load a stage checkpoint (model.safetensors; optim.json + optim.safetensors: the optimizer and
        the torch RNG state; state.json: step, config, fingerprint, the stage's `extra` values) into
        model and opt. Returns (next step, extra). ConfigError when this config may not resume it."""
        st = load_json(path, CKPT_STATE)
        check_resumable(from_dict(st["config"]), self.cfg, path)
        try:
            model.load_state_dict(load_file(os.path.join(path, CKPT_MODEL), device=str(device)))
            with open(os.path.join(path, CKPT_OPTIM_SKELETON)) as f:
                skeleton = exact_json.loads(f.read())
            saved = join_tensors(skeleton, load_file(os.path.join(path, CKPT_OPTIM)))
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise unloadable(path, e) from None
        opt.load_state_dict(saved["opt"])
        torch.set_rng_state(saved["torch_rng"])
        return int(st["step"]), dict(st.get("extra", {}))


# -- a train rank's state, as the files hold it --------------------------------------------------------------------
def _optimizers(m: TrainModels) -> list[tuple[torch.optim.Optimizer, str]]:
    out = [(m.opt_policy, "opt_policy")]
    if m.value is not None and m.opt_value is not None:
        out.append((m.opt_value, "opt_value"))
    return out


def optim_state(m: TrainModels) -> dict:
    """Optimizers, LR schedulers, KL controller, torch RNG; no value entries without a critic.
    Sharded: the optimizers' moments are this rank's DTensors (their parts go to rank files)."""
    out = {key: opt.state_dict() for opt, key in _optimizers(m)}
    out["sched_policy"] = m.sched_policy.state_dict()
    if m.sched_value is not None:
        out["sched_value"] = m.sched_value.state_dict()
    return {**out, "kl_ctl": m.kl_ctl.state_dict(), "torch_rng": torch.get_rng_state()}


def _load_optimizer(opt: torch.optim.Optimizer, load: Callable[[], None]) -> None:
    fused = [g.get("fused") for g in opt.param_groups]
    load()
    for g, f in zip(opt.param_groups, fused):  # keep this build's kernel choice
        g["fused"] = f


def load_optim_state(m: TrainModels, st: dict, optimizers: bool = True) -> None:
    """Restore `optim_state()` (optimizers=False: all but the optimizers); raises KeyError when a value
    entry these models need is missing."""
    for opt, key in _optimizers(m) if optimizers else []:
        _load_optimizer(opt, partial(opt.load_state_dict, st[key]))
    m.sched_policy.load_state_dict(st["sched_policy"])
    if m.sched_value is not None:
        m.sched_value.load_state_dict(st["sched_value"])
    m.kl_ctl.load_state_dict(st["kl_ctl"])
    torch.set_rng_state(st["torch_rng"])


def _rank_parts(m: TrainModels) -> RankParts:
    """This rank's shards of policy, value and their AdamW moments (train.sharding=fsdp)."""
    parts = RankParts()
    parts.add_model("policy", m.policy)
    if m.value is not None:
        parts.add_model("value", m.value)
    for opt, key in _optimizers(m):
        parts.add_optim(key, opt)
    return parts


def _load_from(m: TrainModels, src: CheckpointTensors, skeleton: dict, rank: int, ranks: int) -> None:
    """Load weights and optimizer state from a checkpoint's tensors, one at a time, into this rank's
    layout (its shards, or whole models): a sharded checkpoint, or any checkpoint into sharded models
    (checkpoint/fsdp_state.py). Raises KeyError naming a missing tensor."""
    load_model(m.policy, src, "policy", rank, ranks)
    if m.value is not None:
        load_model(m.value, src, "value", rank, ranks)
    for opt, key in _optimizers(m):
        _load_optimizer(opt, partial(load_optim, opt, skeleton[key], src, rank, ranks))
    rest = {k: v for k, v in skeleton.items() if k not in ("opt_policy", "opt_value")}
    load_optim_state(m, join_tensors(rest, _Lazy(src)), optimizers=False)


class _Lazy(dict):
    """A checkpoint's tensors as the mapping join_tensors reads, each read when it is asked for."""

    def __init__(self, src: CheckpointTensors):
        super().__init__()
        self.src = src

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.src.full(name)
