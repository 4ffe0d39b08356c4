"""The run configuration: a typed schema (frozen dataclasses) filled from YAML + overrides.

    cfg = load_config("configs/demo.yaml", ["seed=3", "layout.train=2"])
    cfg = dataclasses.replace(cfg, run_dir=os.path.abspath(cfg.run_dir))  # derive, never assign

Every field is documented where it is declared (config/schema.py, config/sections/), and so is whether it
may change on resume (config/fields.py `resume_safe`; config/resume.py derives RESUME_SAFE_KEYS). `load_config` merges, type-checks and validates once;
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
from hpc_rlhf.config.resume import RESUME_SAFE_KEYS, is_resume_safe_key, refuse, unsafe_changes
from hpc_rlhf.config.schema import *  # noqa: F403 - every section class, as `from hpc_rlhf.config import PPOConfig`
from hpc_rlhf.config.schema import Config, RewardSourceConfig
from hpc_rlhf.config.schema import __all__ as _SCHEMA
from hpc_rlhf.errors import ConfigError, first_line

__all__ = [
    *_SCHEMA,
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


def _yaml_error(e: Exception) -> str:
    """'line L, column C: what is wrong (while what)' of a YAML syntax error (1-based, as editors count)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return first_line(e)
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None:
        context += f" that starts at line {start.line + 1}, column {start.column + 1}"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")


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
                raise ConfigError(f"config file '{path}' is not valid YAML: {_yaml_error(e)}") from None
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


_is_safe = is_resume_safe_key  # the name config/describe.py and older callers use


def resume_diff(saved: Config, new: Config) -> list[str]:
    """Keys whose values differ and are not safe to change on resume, as 'key: old -> new'."""
    return unsafe_changes(flatten(to_dict(saved)), flatten(to_dict(new)))


def check_resumable(saved: Config, new: Config, where: str) -> None:
    """Raise ConfigError (one line) when `new` differs from the config `saved` with checkpoint `where`
    in keys that are not safe to change on resume. The one resume check of the package: the launcher
    runs it before any rank starts, the train lead again on the checkpoint it loads."""
    refuse(resume_diff(saved, new), where)
