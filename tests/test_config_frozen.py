"""The config is frozen after parsing: no field of any section can be assigned, no module of the
package (or tools/) assigns one, run preparation derives a copy, and freezing changed no fingerprint."""

from __future__ import annotations

import ast
import dataclasses
import os

import pytest

from hpc_rlhf.config import Config, fingerprint, flatten, from_dict, load_config, resume_diff, to_dict, to_yaml
from hpc_rlhf.launch.prepare import prepare_run
from tests.conftest import REPO, TINY

DEMO = os.path.join(REPO, "configs", "demo.yaml")

# Printed by the code before the config was frozen (commit 1e4f3bc, /work/main) with
#   python -c "from hpc_rlhf.config import *; print(fingerprint(load_config(PATH, OVERRIDES)))"
# Shards and checkpoints carry the fingerprint: the same config must keep it. Re-printed when the
# `reward:` and `algo:` sections (not resume-safe) were added: a new key changes every fingerprint;
# again when `stage`, `sft:`, `rm.chat_template`, `rm.ranks` (the SFT and reward-model stages), `model.lora`
# (its keys but `export` are not resume-safe) and `train:` were added, and layout.train became resume-safe
# (checkpoints hold full states: issue 16, resharded resume), and the prompt-dataset `task.*` and
# `model.reward_tokenizer_path`/`reward_chat_template` keys came (issue 15), and `train.precision`
# (mixed precision, not resume-safe: issue 16), and the pair tables' `rm.prompt_column`/`chosen_column`/
# `rejected_column` (issue 15).
OVERRIDES = [
    "seed=3",
    "layout.train=2",
    "ppo.kl.estimator=k3",
    "slurm.setup=['a','b']",
    "run_dir=/x/y",
    "total_steps=9",
]
FINGERPRINTS = [
    (None, [], "a5a2979af22109b9"),  # the schema defaults (what `hpc-rlhf demo` runs)
    (DEMO, [], "a5a2979af22109b9"),
    (TINY, [], "fe545a874f5d2c68"),
    (TINY, OVERRIDES, "69777f7d88516dfe"),
]


def _sections(cfg) -> list[tuple[str, object]]:
    """(dotted prefix, section) of the config and of every section nested in it."""
    out = [("", cfg)]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += [(f"{f.name}.{p}", s) for p, s in _sections(value)]
    return out


def _assert_frozen(cfg: Config) -> None:
    for prefix, section in _sections(cfg):
        for f in dataclasses.fields(section):
            with pytest.raises(dataclasses.FrozenInstanceError, match=rf"'{prefix}{f.name}'.*dataclasses\.replace"):
                setattr(section, f.name, getattr(section, f.name))
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(section, f.name)


def test_every_field_of_every_section_refuses_assignment():
    cfg = load_config(TINY)
    assert len(_sections(cfg)) >= 12  # Config and all its sections, nested ones (model.arch, ppo.kl) too
    _assert_frozen(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"ppo=replace\(cfg\.ppo, kl=replace\(cfg\.ppo\.kl"):
        cfg.ppo.kl.target = 1.0  # type: ignore[misc]


def test_prepare_run_derives_a_copy_with_an_absolute_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TINY, ["run_dir=rel/run"])
    prepared, run_dir = prepare_run(cfg)
    assert run_dir == str(tmp_path / "rel" / "run") == prepared.run_dir
    assert cfg.run_dir == "rel/run"  # the caller's config is untouched
    assert dataclasses.replace(prepared, run_dir=cfg.run_dir) == cfg
    _assert_frozen(prepared)
    saved = load_config(os.path.join(run_dir, "config.yaml"))
    assert saved == prepared and fingerprint(saved) == fingerprint(cfg)


@pytest.mark.parametrize("path, overrides, expected", FINGERPRINTS)
def test_fingerprints_are_those_of_the_unfrozen_config(path, overrides, expected):
    cfg = load_config(path, overrides)
    assert fingerprint(cfg) == expected
    again = from_dict(to_dict(cfg))
    assert again == cfg and to_yaml(again) == to_yaml(cfg) and fingerprint(again) == expected


def test_a_run_config_round_trips_through_its_yaml(tmp_path):
    cfg = load_config(TINY, OVERRIDES)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    back = load_config(str(path))
    assert back == cfg and flatten(to_dict(back)) == flatten(to_dict(cfg)) and fingerprint(back) == fingerprint(cfg)
    assert resume_diff(load_config(TINY), cfg) == [
        "ppo.kl.estimator: 'k1' -> 'k3'",
        "seed: 0 -> 3",
    ]


def _is_config(node: ast.AST) -> bool:
    """Whether an expression reads like a run config or a section of one: cfg, self.cfg, cfg.model,
    new_cfg (Hugging Face model configs are named config/conf and are not ours)."""
    while isinstance(node, ast.Attribute):
        if node.attr == "cfg":
            return True
        node = node.value
    return isinstance(node, ast.Name) and (node.id == "cfg" or node.id.endswith("_cfg"))


def _unpacked(target: ast.AST) -> list[ast.AST]:
    """The targets of `a, (cfg.x, *b) = ...`, one by one."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for e in target.elts for t in _unpacked(e)]
    return _unpacked(target.value) if isinstance(target, ast.Starred) else [target]


def _assignments_to_config(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = [t for t in node.targets for t in _unpacked(t)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and node.args:
            func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if func in ("setattr", "__setattr__", "delattr") and _is_config(node.args[0]):
                found.append(f"{name}:{node.lineno}")
        found += [f"{name}:{t.lineno}" for t in targets if isinstance(t, ast.Attribute) and _is_config(t.value)]
    return found


def test_the_assignment_finder_finds_assignments():
    src = """
cfg.run_dir = x
self.cfg.model.reward_path = x
a, cfg.seed = 1, 2
cfg.total_steps += 1
setattr(new_cfg.ppo, "lr", 0.1)
self.cfg = cfg
config.num_labels = 1
cfg = dataclasses.replace(cfg, seed=1)
"""
    assert _assignments_to_config(src, "m") == ["m:2", "m:3", "m:4", "m:5", "m:6"]


def test_no_module_assigns_to_a_config_field():
    """Static twin of the frozen dataclasses: catches an assignment on a path no test runs (this file
    assigns on purpose, to see it refused)."""
    found = []
    for top in ("hpc_rlhf", "tools", "tests"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in (f for f in files if f.endswith(".py")):
                path = os.path.join(root, f)
                if os.path.samefile(path, __file__):
                    continue
                found += _assignments_to_config(open(path).read(), os.path.relpath(path, REPO))
    assert not found, "assignments to a config field (derive with dataclasses.replace): " + ", ".join(found)
