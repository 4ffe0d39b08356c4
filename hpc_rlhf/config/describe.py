"""Every config key with its type, default, documentation and resume-safety, read from the schema itself.

    for k in keys():                     # every leaf key of Config, in declaration order
        print(k.key, k.type, k.default, k.resume_safe, k.doc)
    keys("slurm")                        # the keys of one section (dotted prefix)
    markdown_table("slurm")              # those keys as the docs show them (tools/render_docs.py)

The documentation of a key is the string literal under its field in the dataclass (config/schema.py), the
same text a reader of the schema sees; nothing is kept twice.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any, get_type_hints

from hpc_rlhf.config import _is_safe
from hpc_rlhf.config.schema import Config


@dataclass(frozen=True)
class KeyInfo:
    key: str
    """Dotted name, as in a `key=value` override."""
    type: str
    """The annotation as written in the schema."""
    default: Any
    """The schema's default value."""
    doc: str
    """The field's documentation, on one line."""
    resume_safe: bool
    """May differ between a checkpoint's config and the config that resumes it."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: the string literal that follows its declaration} of a dataclass, on one line each."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _walk(cls: type, prefix: str) -> list[KeyInfo]:
    hints, docs, out = get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += _walk(hints[f.name], f"{key}.")
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        default = _default(f)
        if isinstance(default, list):
            default = [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for x in default]
        out.append(KeyInfo(key, kind, default, docs.get(f.name, ""), _is_safe(key)))
    return out


def keys(section: str = "") -> list[KeyInfo]:
    """The leaf keys of Config under `section` ('' for all; 'ppo' or 'ppo.kl' for one section)."""
    every = _walk(Config, "")
    if not section:
        return every
    return [k for k in every if k.key.startswith(f"{section}.")]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def markdown_table(section: str = "") -> str:
    """The keys of `section` as a markdown table: key, default, resume-safe, what it does."""
    rows = ["| key | default | safe to change on resume | what it does |", "|---|---|---|---|"]
    for k in keys(section):
        doc = k.doc.replace("|", "\\|")
        rows.append(f"| `{k.key}` | `{_show(k.default)}` | {'yes' if k.resume_safe else 'no'} | {doc} |")
    return "\n".join(rows)


def listing(section: str = "") -> str:
    """The keys as plain text for a terminal (`hpc-rlhf config --keys`): one block per key."""
    lines = []
    for k in keys(section):
        safe = "safe to change on resume" if k.resume_safe else "fixed for the run"
        lines.append(f"{k.key} = {_show(k.default)}    ({k.type}; {safe})")
        lines += textwrap.wrap(k.doc, 100, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)
