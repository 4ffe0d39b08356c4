"""`plot` writes PNGs; the CLI plugs into a parent parser and runs as `python -m hpc_rlhf.archive`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from hpc_rlhf.archive import Archive, plot
from hpc_rlhf.archive.cli import add_subparsers, main

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_pngs(archive, tmp_path, capsys):
    d, _ = archive
    out = tmp_path / "figs"
    assert main(["plot", d, "--out", str(out), "--versions", "0", "3"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(os.path.basename(p) for p in printed)
    assert names == ["hacking_signals.png", "overview.png", "reward_hist.png", "trends.png"]
    for p in printed:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == PNG and os.path.getsize(p) > 5000


def test_plot_api_no_ngram_and_one_version(archive, tmp_path):
    d, _ = archive
    paths = plot(Archive.open(d), str(tmp_path / "one"), versions=[1], ngram=None)
    assert len(paths) == 4 and all(os.path.getsize(p) > 1000 for p in paths)
    # a version filter leaving a single version still draws every figure
    paths = plot(Archive.open(d), str(tmp_path / "v2"), steps=(3, 3))
    assert len(paths) == 4 and all(os.path.getsize(p) > 1000 for p in paths)


def test_add_subparsers_into_a_parent_cli(archive, capsys):
    d, _ = archive
    parser = argparse.ArgumentParser(prog="hpc-rlhf")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("train")
    add_subparsers(sub)
    args = parser.parse_args(["archive", "verify", d])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith("shards OK")
    args = parser.parse_args(["archive", "summary", d, "--format", "csv", "--no-ngram"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("policy_version,samples,scored,")


def test_python_dash_m(archive):
    d, _ = archive
    r = subprocess.run([sys.executable, "-m", "hpc_rlhf.archive", "verify", d], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("shards OK"), r.stderr
    r = subprocess.run([sys.executable, "-m", "hpc_rlhf.archive", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "archive" in r.stdout
