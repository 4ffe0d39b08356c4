"""Which config keys may change when a run resumes, read from the schema's fields (`resume_safe`, config/fields.py).

    RESUME_SAFE_KEYS                 # ('total_steps', 'model.lora.export', ..., 'logging.', 'slurm.', ...)
    is_resume_safe_key("slurm.nodes")            # True: a key, or a key of a section marked as a whole
    refuse(unsafe_changes(saved_flat, new_flat), where)   # ConfigError (one line) naming each refused change
    markdown_list()                              # the docs' list (docs/checkpointing.md; tools/render_docs.py)

A key ending in "." stands for a whole section. The list, the refusal's message and the docs are all
generated from the field marks; a key is made resume-safe by declaring it with `resume_safe(...)`.
"""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

from hpc_rlhf.config.fields import is_resume_safe
from hpc_rlhf.config.schema import Config
from hpc_rlhf.errors import ConfigError


def _safe_keys(cls: type, prefix: str = "") -> list[str]:
    hints, out = get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        key, nested = f"{prefix}{f.name}", dataclasses.is_dataclass(hints[f.name])
        if is_resume_safe(f):
            out.append(f"{key}." if nested else key)
        elif nested:
            out += _safe_keys(hints[f.name], f"{key}.")
    return out


RESUME_SAFE_KEYS: tuple[str, ...] = tuple(_safe_keys(Config))
"""Keys (and sections, ending in ".") that may differ between a checkpoint's config and the resuming one."""


def is_resume_safe_key(key: str) -> bool:
    """Whether the dotted `key` may change on resume."""
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE_KEYS)


def _shown(key: str) -> str:
    return f"{key}*" if key.endswith(".") else key


def markdown_list() -> str:
    """The resume-safe keys as the docs show them: `total_steps`, ..., `slurm.*`."""
    return ", ".join(f"`{_shown(k)}`" for k in RESUME_SAFE_KEYS)


def unsafe_changes(saved: dict, new: dict) -> list[str]:
    """Of two flattened configs, the keys whose values differ and are not safe to change, as 'key: old -> new'."""
    return [
        f"{k}: {saved.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(saved) | set(new))
        if saved.get(k) != new.get(k) and not is_resume_safe_key(k) and k != "run_dir"
    ]


def refuse(diff: list[str], where: str) -> None:
    """The one-line ConfigError of a resume refused for `diff`; it names every key that may change."""
    if diff:
        raise ConfigError(
            f"config differs from checkpoint '{where}' in keys not safe to change on resume: "
            + "; ".join(diff)
            + f" (only {', '.join(_shown(k) for k in RESUME_SAFE_KEYS)} may change;"
            " start a new run_dir, or undo the change)"
        )
