"""`plot` draws each version's statistics and writes PNGs; the CLI plugs into a parent parser and runs as
`python -m hpc_rlhf.archive`. What a figure shows is read back from its matplotlib objects (line and band
data, histogram heights, legends) and compared with statistics computed from the archive's ground truth."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
from archive_expect import kl_seq, rep_rate
from matplotlib.figure import Figure

from hpc_rlhf.archive import Archive, plot
from hpc_rlhf.archive.cli import add_subparsers, main

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_pngs(archive, tmp_path, capsys):
    d, _ = archive
    out = tmp_path / "figs"
    assert main(["plot", d, "--out", str(out), "--versions", "0", "3"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(os.path.basename(p) for p in printed)
    assert names == ["groups.png", "hacking_signals.png", "overview.png", "reward_hist.png", "trends.png"]
    for p in printed:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == PNG and os.path.getsize(p) > 5000


@pytest.fixture
def figures(monkeypatch) -> dict[str, Figure]:
    """Every figure the plotting code saves, by file name (matplotlib keeps a closed figure's artists)."""
    saved: dict[str, Figure] = {}
    real = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        saved[os.path.basename(str(fname))] = fig
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _lines(fig: Figure) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(axes title, line label) -> (x, y) of every labelled line of the figure."""
    out = {}
    for ax in fig.axes:
        for ln in ax.get_lines():
            if not ln.get_label().startswith("_"):
                out[(ax.get_title(), ln.get_label())] = (np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata(), float))
    return out


def _truth_by_version(truth: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    """Per version, from the ground truth with plain numpy: rewards and KLs of the scored samples, and
    response length, EOS flag and repeated 3-gram rate of every sample."""
    out = {}
    for v in sorted({s["policy_version"] for s in truth}):
        g = [s for s in truth if s["policy_version"] == v]
        sc = [s for s in g if s["scored"]]
        out[v] = {
            "reward": np.array([float(s["reward"]) for s in sc]),
            "kl": np.array([kl_seq(s) for s in sc]),
            "len_scored": np.array([len(s["response_tokens"]) for s in sc], float),
            "len": np.array([len(s["response_tokens"]) for s in g], float),
            "eos": np.array([s["eos"] for s in g], float),
            "rep3": np.array([rep_rate(s["response_tokens"], 3) for s in g]),
        }
    return out


def test_figures_draw_the_per_version_statistics(archive, tmp_path, figures):
    d, truth = archive
    by = _truth_by_version(truth)
    x = list(by)
    plot(Archive.open(d), str(tmp_path / "figs"), versions=[0, 3])
    assert sorted(figures) == ["groups.png", "hacking_signals.png", "overview.png", "reward_hist.png", "trends.png"]

    # trends: median line and p10-p90 / p25-p75 bands of reward, sequence KL and response length
    trends = figures["trends.png"]
    lines = _lines(trends)
    for ax, title, key in zip(trends.axes, ["reward", "KL to reference", "response length"], ["reward", "kl", "len"]):
        lx, ly = lines[(title, "median")]
        assert list(lx) == x
        np.testing.assert_allclose(ly, [np.median(by[v][key]) for v in x], rtol=1e-6)
        assert len(ax.collections) == 2
        for band, (lo, hi) in zip(ax.collections, [(10, 90), (25, 75)]):
            verts = band.get_paths()[0].vertices
            for v in x:
                ys = verts[np.isclose(verts[:, 0], v), 1]
                for p in (lo, hi):
                    assert np.isclose(ys, np.percentile(by[v][key], p), rtol=1e-6).any(), (
                        title,
                        band.get_label(),
                        v,
                        p,
                    )

    # hacking signals: length drift, EOS rate, repeated 3-gram rate, corr(reward, length)
    lines = _lines(figures["hacking_signals.png"])
    mean_len = np.array([by[v]["len"].mean() for v in x])
    p90 = np.array([np.percentile(by[v]["len"], 90) for v in x])
    np.testing.assert_allclose(lines[("length drift", "mean length / first")][1], mean_len / mean_len[0], rtol=1e-6)
    np.testing.assert_allclose(lines[("length drift", "p90 / first")][1], p90 / p90[0], rtol=1e-6)
    np.testing.assert_allclose(lines[("", "EOS rate")][1], [by[v]["eos"].mean() for v in x], rtol=1e-6)
    np.testing.assert_allclose(
        lines[("repeated 3-gram rate", "mean rate")][1], [np.nanmean(by[v]["rep3"]) for v in x], rtol=1e-6
    )
    corr = [np.corrcoef(by[v]["reward"], by[v]["len_scored"])[0, 1] for v in x]
    np.testing.assert_allclose(lines[("corr(reward, ·) within a version", "with response length")][1], corr, rtol=1e-6)

    # reward histogram of the chosen versions 0 and 3: scored counts in the legend, density heights
    (ax,) = figures["reward_hist.png"].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"v{v} (n={len(by[v]['reward'])})" for v in (0, 3)]
    allr = np.concatenate([by[0]["reward"], by[3]["reward"]])
    bins = np.linspace(*np.percentile(allr, [0.5, 99.5]), 41)
    filled = [p for p in ax.patches if str(p.get_label()).startswith("v")]
    assert len(filled) == 2
    for patch, v in zip(filled, (0, 3)):
        heights = patch.get_xy()[1 : 2 * 40 : 2, 1]  # a step outline: (edge, height) pairs along the bins
        np.testing.assert_allclose(heights, np.histogram(by[v]["reward"], bins, density=True)[0], rtol=1e-6)
    assert f"{len(truth)} samples, {len(x)} policy versions" in figures["overview.png"].get_suptitle()


def test_plot_api_no_ngram_and_one_version(archive, tmp_path):
    d, _ = archive
    paths = plot(Archive.open(d), str(tmp_path / "one"), versions=[1], ngram=None)
    assert len(paths) == 5 and all(os.path.getsize(p) > 1000 for p in paths)
    # a version filter leaving a single version still draws every figure
    paths = plot(Archive.open(d), str(tmp_path / "v2"), steps=(3, 3))
    assert len(paths) == 5 and all(os.path.getsize(p) > 1000 for p in paths)


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
