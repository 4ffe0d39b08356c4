"""The run configuration: a typed schema (frozen dataclasses) filled from YAML + overrides.

    cfg = load_config("configs/demo.yaml", ["seed=3", "layout.train=2"])
    cfg = dataclasses.replace(cfg, run_dir=os.path.abspath(cfg.run_dir))  # derive, never assign

Every field is documented where it is declared. `load_config` merges, type-checks and validates once;
an unknown key or a bad value raises `ConfigError` with one line naming the key and the valid choices.
A Config and every section of it are frozen: assigning to a field raises `FrozenInstanceError` naming
the field; a changed config is derived with `dataclasses.replace` (nested: replace the section too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpc_rlhf.config.checks import get_key, validate
from hpc_rlhf.config.schema import (
    AlgoConfig,
    ArchConfig,
    CheckpointConfig,
    Config,
    GenerateConfig,
    KLConfig,
    LayoutConfig,
    LoggingConfig,
    LoRAConfig,
    ModelConfig,
    PlacementConfig,
    PPOConfig,
    RewardConfig,
    RewardSourceConfig,
    RMConfig,
    RuntimeConfig,
    SFTConfig,
    SlurmConfig,
    TaskConfig,
    TrainConfig,
)
from hpc_rlhf.errors import ConfigError, first_line

__all__ = [
    "AlgoConfig",
    "ArchConfig",
    "CheckpointConfig",
    "Config",
    "GenerateConfig",
    "KLConfig",
    "LayoutConfig",
    "LoggingConfig",
    "LoRAConfig",
    "ModelConfig",
    "PlacementConfig",
    "PPOConfig",
    "RewardConfig",
    "RewardSourceConfig",
    "RMConfig",
    "RuntimeConfig",
    "SFTConfig",
    "TrainConfig",
    "SlurmConfig",
    "TaskConfig",
    "RESUME_SAFE_KEYS",
    "check_resumable",
    "fingerprint",
    "flatten",
    "from_dict",
    "load_config",
    "resume_diff",
    "to_dict",
    "to_yaml",
    "validate",
]

# Keys that may differ between a checkpoint's config and the config it is resumed with.
RESUME_SAFE_KEYS = (
    "total_steps",
    "logging.",
    "checkpoint.every_steps",
    "checkpoint.every_min",
    "checkpoint.keep_last",
    "checkpoint.sync_rollouts",
    "model.lora.export",
    "runtime.wait_timeout_s",
    "runtime.heartbeat_timeout_s",
    "runtime.start_timeout_s",
    "runtime.lease_ttl_s",
    "runtime.mpiexec",
    "runtime.launcher",
    "runtime.rendezvous_addr",
    "runtime.rendezvous_port",
    "runtime.allow_shared_gpu",
    "slurm.",
    "placement.",
    "layout.train",  # checkpoints hold full states, whatever the train ranks' number or sharding
    "train.sharding",
    "train.activation_checkpointing",
    "train.max_tokens_per_microbatch",
)


def _valid_keys(node: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _explain(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = first_line(e)
    item = getattr(e, "object_type", None) is RewardSourceConfig and not key.startswith("reward.")
    key = f"reward.sources[i].{key}" if item else key  # OmegaConf names a list item's key alone
    if "not in" in msg or "Key '" in msg and "not" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if item:
            return f"config key '{key}' is unknown; valid keys of a reward source: {', '.join(_valid_keys(RewardSourceConfig))}"
        node = Config()
        try:
            node = get_key(node, parent) if parent else node
        except AttributeError:
            pass
        return f"config key '{key}' is unknown; valid keys{' of ' + parent if parent else ''}: {', '.join(_valid_keys(node))}"
    return f"config key '{key}': {msg}"


def load_config(path: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Schema defaults <- YAML file <- `key=value` overrides; typed, validated, returned as a Config."""
    try:
        base = OmegaConf.structured(Config)
        layers = [base]
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"config file '{path}' does not exist; pass a YAML file (see configs/)")
            try:
                layers.append(OmegaConf.load(path))
            except Exception as e:  # yaml syntax
                raise ConfigError(f"config file '{path}' is not valid YAML: {first_line(e)}") from None
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value (e.g. seed=3)")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_explain(e)) from None
    return validate(cfg)  # type: ignore[arg-type]


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(d: dict) -> Config:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d)))  # type: ignore[return-value]


def fingerprint(cfg: Config) -> str:
    """A short hash of the config minus the resume-safe keys: shards and checkpoints carry it."""
    flat = flatten(to_dict(cfg))
    kept = {k: v for k, v in flat.items() if not _is_safe(k) and k != "run_dir"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE_KEYS)


def resume_diff(saved: Config, new: Config) -> list[str]:
    """Keys whose values differ and are not safe to change on resume, as 'key: old -> new'."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not _is_safe(k) and k != "run_dir"
    ]


def check_resumable(saved: Config, new: Config, where: str) -> None:
    """Raise ConfigError (one line) when `new` differs from the config `saved` with checkpoint `where`
    in keys that are not safe to change on resume. The one resume check of the package: the launcher
    runs it before any rank starts, the train lead again on the checkpoint it loads."""
    diff = resume_diff(saved, new)
    if diff:
        raise ConfigError(
            f"config differs from checkpoint '{where}' in keys not safe to change on resume: "
            + "; ".join(diff)
            + " (only total_steps, logging.*, checkpoint.* intervals, runtime timeouts, slurm.*, placement.*, "
            "layout.train and train.sharding/activation_checkpointing/max_tokens_per_microbatch may change;"
            " start a new run_dir, or undo the change)"
        )
