"""Group diagnostics (zero-variance share, within-group reward spread), `show --group` and per-source
rewards, against plain-loop expectations from the ground truth (archive_data.py plants equal-reward groups)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from archive_data import SOURCES, WEIGHTS
from archive_expect import group_rewards, group_summary

from hpc_rlhf.archive import Archive, plot, summarize
from hpc_rlhf.archive.cli import main
from hpc_rlhf.archive.groups import group_stats


def _same(got: float, exp: float) -> bool:
    return math.isnan(exp) and math.isnan(got) if math.isnan(exp) else got == pytest.approx(exp, rel=1e-12, abs=1e-15)


def test_group_stats_matches_plain_loops_with_ties_nans_and_singletons():
    rng = np.random.default_rng(3)
    n = 400
    step, gid = rng.integers(0, 4, n), rng.integers(0, 30, n)
    reward = rng.choice([0.0, 0.5, 1.0], n).astype(np.float32)  # few values: many all-equal groups
    reward[rng.random(n) < 0.1] = np.nan  # unscored samples are left out
    got = group_stats(step, gid, reward)
    by: dict[tuple, list[float]] = {}
    for s, g, r in zip(step.tolist(), gid.tolist(), reward.tolist()):
        if not math.isnan(r):
            by.setdefault((s, g), []).append(r)
    exp = group_summary([g for g in by.values() if len(g) >= 2])
    assert exp["groups"] > 20 and 0 < exp["zero_var_share"] < 1
    assert got["groups"] == exp["groups"]
    assert _same(got["zero_var_share"], exp["zero_var_share"]) and _same(got["group_std_mean"], exp["group_std_mean"])
    # the same group id at two steps is two groups; a group of one scored sample does not count
    two = group_stats(np.array([0, 0, 1, 1, 2]), np.array([5, 5, 5, 5, 5]), np.array([1.0, 1.0, 0.0, 2.0, 7.0]))
    assert two == {"groups": 2, "zero_var_share": 0.5, "group_std_mean": 0.5}
    none = group_stats(np.array([0]), np.array([1]), np.array([1.0]))
    assert none["groups"] == 0 and math.isnan(none["zero_var_share"]) and math.isnan(none["group_std_mean"])


def test_summary_has_group_diagnostics_per_version(archive):
    d, truth = archive
    rows = summarize(Archive.open(d))
    for row in rows:
        exp = group_summary(group_rewards(truth, row["policy_version"]))
        assert row["groups"] == exp["groups"] > 0
        assert _same(row["zero_var_share"], exp["zero_var_share"])
        assert _same(row["group_std_mean"], exp["group_std_mean"])
    # planted: version 3 (step 4) has the equal-reward group (rows 2, 3) in each of its 2 scored shards
    v3 = next(r for r in rows if r["policy_version"] == 3)
    assert v3["zero_var_share"] >= 2 / v3["groups"]


def test_plot_draws_the_group_diagnostics(archive, tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    d, _ = archive
    rows = summarize(Archive.open(d))
    saved: dict[str, Figure] = {}
    real = Figure.savefig

    def spy(self, fname, *a, **k):
        saved[str(fname).rsplit("/", 1)[-1]] = self
        return real(self, fname, *a, **k)

    Figure.savefig = spy  # type: ignore[method-assign]
    try:
        plot(Archive.open(d), str(tmp_path / "figs"))
    finally:
        Figure.savefig = real  # type: ignore[method-assign]
    share_ax, std_ax = saved["groups.png"].axes
    for ax, key in ((share_ax, "zero_var_share"), (std_ax, "group_std_mean")):
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == [r["policy_version"] for r in rows]
        np.testing.assert_allclose(line.get_ydata(), [r[key] for r in rows], rtol=1e-12)


def test_per_source_rewards_in_the_api(archive):
    d, truth = archive
    arc = Archive.open(d)
    assert arc.reward_sources() == ["rm", *SOURCES]  # versions 1-2 read as the legacy source
    t = arc.table(["step", "prompt_index", "sample_index", "reward", "reward/judge", "reward/correct", "reward/rm"])
    by = {(s["step"], s["prompt_index"], s["sample_index"]): s for s in truth}
    checked = 0
    for i in range(len(t["reward"])):
        s = by[(int(t["step"][i]), int(t["prompt_index"][i]), int(t["sample_index"][i]))]
        for name in ("judge", "correct", "rm"):
            got, exp = t[f"reward/{name}"][i], s["sources"].get(name)
            assert np.isnan(got) if exp is None else got == exp
        if "judge" in s["sources"]:  # version 3: reward = the weighted sum of the stored values
            w = np.float64(t["reward/judge"][i]) * WEIGHTS[0] + np.float64(t["reward/correct"][i]) * WEIGHTS[1]
            assert t["reward"][i] == np.float32(w)
            checked += 1
        elif s["scored"]:  # versions 1-2: the one source is the reward
            assert t["reward/rm"][i] == t["reward"][i]
    assert checked > 20
    with pytest.raises(Exception, match="reward/<source>"):
        arc.table(["reward/"])


def _heads(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("=== ")]


def test_show_a_whole_group(archive, capsys):
    d, truth = archive
    want = sorted((s for s in truth if s["step"] == 4 and s["group_id"] == 401), key=lambda s: s["sample_index"])
    assert len(want) == 2 and want[0]["reward"] == want[1]["reward"]  # a planted zero-variance group
    assert main(["show", d, "--group", "4:401"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    r = float(want[0]["reward"])
    assert first == f"--- group 401 of step 4: 2 samples, 2 scored, reward mean {r:.4g} std 0, all equal: yes"
    heads = _heads(out)
    assert [int(re.search(r"sample (\d+)", h).group(1)) for h in heads] == [0, 1]
    for h, s in zip(heads, want):
        assert f"prompt {s['prompt_index']}" in h
        assert f"sources judge={s['sources']['judge']:.4g} correct={s['sources']['correct']:.4g}" in h

    assert main(["show", d, "--group", "1:100"]) == 0  # version 2: the legacy source
    out = capsys.readouterr().out
    want = [s for s in truth if s["step"] == 1 and s["group_id"] == 100]
    assert len(_heads(out)) == len(want) and all("sources rm=" in h for h in _heads(out))


def test_show_group_errors(archive, capsys):
    d, _ = archive
    for bad in ("4", "4:x"):
        with pytest.raises(SystemExit):
            main(["show", d, "--group", bad])
        assert f"'{bad}' is not STEP:GROUP" in capsys.readouterr().err
    assert main(["show", d, "--group", "4:401", "--top", "2"]) == 2
    assert "--group shows a whole group" in capsys.readouterr().err
    assert main(["show", d, "--group", "4:999"]) == 0
    assert capsys.readouterr().out.strip() == "(no samples match)"
