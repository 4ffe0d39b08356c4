"""Which keys may change on resume is declared on the schema's fields (`resume_safe`, config/fields.py); the
list, the refusal's message and docs/checkpointing.md are generated from those marks and agree."""

from __future__ import annotations

import dataclasses
import os

import pytest

from hpc_rlhf.config import Config, check_resumable, load_config
from hpc_rlhf.config.fields import resume_safe
from hpc_rlhf.config.resume import RESUME_SAFE_KEYS, _safe_keys, is_resume_safe_key, markdown_list
from hpc_rlhf.errors import ConfigError
from tests.conftest import REPO

# Keys the hand-kept list once missed in the error message or in docs/checkpointing.md.
ONCE_MISSED = ["model.lora.export", "checkpoint.sync_rollouts", "runtime.heartbeat_timeout_s", "placement."]


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int = resume_safe(1)
    b: int = 2


@dataclasses.dataclass(frozen=True)
class _Section:
    x: int = 0


@dataclasses.dataclass(frozen=True)
class _Top:
    n: int = 0
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    section: _Section = resume_safe(default_factory=_Section)  # noqa: RUF009 - a field() with metadata


def test_the_marks_give_keys_and_whole_sections():
    assert _safe_keys(_Top) == ["inner.a", "section."]
    assert _Inner().a == 1 and _Top().section == _Section()  # the defaults are kept


def test_the_schema_declares_what_resume_has_always_allowed():
    for key in ("total_steps", "layout.train", "train.sharding", "slurm.", "logging.", *ONCE_MISSED):
        assert key in RESUME_SAFE_KEYS
    assert is_resume_safe_key("slurm.nodes") and is_resume_safe_key("placement.train")
    for key in ("seed", "train.precision", "model.lora.r", "layout.generate", "ppo.lr", "slurm"):
        assert not is_resume_safe_key(key)


def test_the_refusal_names_every_resume_safe_key():
    saved = Config()
    with pytest.raises(ConfigError) as e:
        check_resumable(saved, dataclasses.replace(saved, seed=saved.seed + 1), "step_000002")
    msg = str(e.value)
    assert "\n" not in msg and "seed: 0 -> 1" in msg
    for key in RESUME_SAFE_KEYS:
        shown = f"{key}*" if key.endswith(".") else key
        assert shown in msg, f"the refusal does not name {shown}"


@pytest.mark.parametrize("override", ["model.lora.export=adapter", "checkpoint.sync_rollouts=every_shard"])
def test_a_key_the_old_message_missed_may_change(override):
    base = [f"model.policy_path={REPO}"]  # export=adapter needs a base folder
    check_resumable(load_config(None, base), load_config(None, [*base, override]), "step_000002")


def test_docs_list_is_generated_from_the_schema():
    with open(os.path.join(REPO, "docs", "checkpointing.md")) as f:
        text = f.read()
    block = "<!-- BEGIN config.resume_safe_keys -->\n" + markdown_list() + "\n<!-- END config.resume_safe_keys -->"
    assert block in text, "docs/checkpointing.md is stale: run python tools/render_docs.py"
    for key in ONCE_MISSED:
        assert f"`{key}{'*' if key.endswith('.') else ''}`" in markdown_list()
