"""The command line's conventions: help and --version, a help line on every command and argument, flags and
key=value overrides in any order, `config` and `config --keys`, and every user error one line, exit 2, with
nothing written (one table row per case)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from hpc_rlhf import __version__
from hpc_rlhf.config import describe
from hpc_rlhf.launch.cli import build_parser, main
from tests.conftest import REPO, TINY


def _tree(root) -> dict[str, int]:
    """Every path under `root` with its size: what a command must leave unchanged."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            out[p] = os.path.getsize(p) if os.path.isfile(p) else -1
    return out


def _setup(tmp_path) -> dict[str, str]:
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "bad.yaml").write_text("seed: 3\nlayout: {generate: 1\ntotal_steps: 4\n")
    (tmp_path / "notashard.h5").write_text("not HDF5\n")
    return {"T": str(tmp_path), "TINY": TINY}


# argv (T: tmp_path), what the one line says
ERRORS = [
    (
        ["train", "{TINY}", "--total_steps=1", "run_dir={T}/r"],
        r"'--total_steps=1' is not an option; .*: total_steps=1$",
    ),
    (["train", "{TINY}", "--seed", "3", "run_dir={T}/r"], r"'--seed' is not an option; .*: seed=VALUE$"),
    (["demo", "configs/grpo.yaml", "run_dir={T}/r"], r"demo takes a config file as --config: hpc-rlhf demo --config"),
    (["train", "{TINY}", "run_dir={T}/afile"], r"run_dir '.*afile' is a file, not a folder"),
    (["sft", "{TINY}", "sft.data_path={T}/bad.yaml", "run_dir={T}/afile"], r"run_dir '.*afile' is a file, not a"),
    (["submit", "{TINY}", "run_dir={T}/afile"], r"run_dir '.*afile' is a file, not a folder"),
    (["archive", "summary", "{T}/notashard.h5"], r"'.*notashard.h5' is not a rollout shard \(not a readable HDF5"),
    (["checkpoints", "{T}/missing"], r"run dir '.*missing' does not exist"),
    (["status", "{T}/missing"], r"run dir '.*missing' does not exist"),
    (["plot", "{T}/missing"], r"run dir '.*missing' does not exist"),
    (["resume", "{T}/missing"], r"'.*missing' does not exist"),
    (["train", "{TINY}", "run_dir={T}/r", "runtime.mpiexec=/nonexistent"], r"runtime.mpiexec '/nonexistent' not found"),
    (
        ["train", "{T}/bad.yaml", "run_dir={T}/r"],
        r"not valid YAML: line 3, column 12: .* starts at line 2, column 9\)$",
    ),
    (["train", "{TINY}", "seed=x", "run_dir={T}/r"], r"config key 'seed'"),
    (["train", "{TINY}", "algo.name=grp", "run_dir={T}/r"], r"'algo.name'.*grpo"),
    (["train", "{TINY}", "no_such.key=1"], r"config key 'no_such' is unknown; valid keys: run_dir, "),
    (["trian", "{TINY}"], r"invalid choice: 'trian'"),
    (["submit", "--resume", "{T}/missing"], r"'.*missing' does not exist"),
    (["submit", "--resume", "{T}", "configs/tiny.yaml"], r"submit --resume takes the run's own config.yaml"),
    (["config", "--keys", "nosuch"], r"'nosuch' is not a config section"),
]


@pytest.mark.parametrize("argv, says", ERRORS, ids=[" ".join(a[:2]) + " " + a[-1][-22:] for a, _ in ERRORS])
def test_user_error_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, says):
    fill = _setup(tmp_path)
    before = _tree(tmp_path)
    assert main([a.format(**fill) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(says, err.strip()), err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "{TINY}", "--dry-run", "seed=3", "run_dir={T}/r"],
        ["submit", "--dry-run", "{TINY}", "seed=3", "run_dir={T}/r"],
        ["submit", "{TINY}", "seed=3", "--dry-run", "run_dir={T}/r"],
        ["submit", "{TINY}", "seed=3", "run_dir={T}/r", "--dry-run"],
    ],
)
def test_flags_and_overrides_in_any_order(tmp_path, capsys, argv):
    fill = _setup(tmp_path)
    before = _tree(tmp_path)
    assert main([a.format(**fill) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "nothing submitted" in out and f"run dir {tmp_path}/r" in out
    assert _tree(tmp_path) == before
    args = build_parser().parse_args([a.format(**fill) for a in argv])
    assert args.overrides == ["seed=3", f"run_dir={tmp_path}/r"] and args.dry_run


def test_bare_command_prints_help_and_version_prints_version():
    run = [sys.executable, "-m", "hpc_rlhf.launch.cli"]
    bare = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: hpc-rlhf") and bare.stderr == ""
    assert all(cmd in bare.stdout for cmd in ("train", "submit", "status", "plot", "config", "archive"))
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"hpc-rlhf {__version__}"
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert f'\nversion = "{__version__}"\n' in f.read()


def _parsers(p: argparse.ArgumentParser, path: str):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            helped = {c.dest for c in a._choices_actions if c.help}
            assert set(a.choices) <= helped, f"{path}: commands without a help line: {set(a.choices) - helped}"
            for name, sub in a.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_and_argument_has_a_help_line():
    missing = [
        f"{path}: {a.dest}"
        for path, p in _parsers(build_parser(), "hpc-rlhf")
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and a.help in (None, "", argparse.SUPPRESS)
    ]
    assert not missing
    for cmd in ("train", "resume", "submit", "config", "plot", "demo"):  # forms that need an example
        text = build_parser()._subparsers._group_actions[0].choices[cmd].format_help()
        assert "examples:\n  hpc-rlhf " + cmd in text, cmd


def test_config_prints_the_resolved_config_and_lists_every_key(tmp_path, capsys):
    assert main(["config", TINY, "seed=7", "ppo.lr=1e-5"]) == 0
    out = capsys.readouterr().out
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(OmegaConf.create(out))
    assert resolved["seed"] == 7 and resolved["ppo"]["lr"] == 1e-5 and resolved["total_steps"] == 4  # tiny.yaml's
    assert main(["config", "--keys"]) == 0
    listing = capsys.readouterr().out
    for k in describe.keys():
        safe = "safe to change on resume" if k.resume_safe else "fixed for the run"
        assert f"\n{k.key} = " in "\n" + listing and safe in listing
    assert "\ntotal_steps = 40    (int; safe to change on resume)\n" in "\n" + listing
    assert main(["config", "--keys", "layout"]) == 0
    assert capsys.readouterr().out.count(" = ") == 3
