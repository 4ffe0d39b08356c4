"""`verify` and the behaviour of the other commands on a damaged archive."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from archive_data import SHARDS, STEPS
from archive_expect import summary as expected_summary

from hpc_rlhf.archive import Archive, verify
from hpc_rlhf.archive.cli import main


def test_verify_healthy(archive, capsys):
    d, _ = archive
    assert main(["verify", d]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    n_files = 2 * STEPS * SHARDS - 1  # every gen shard + every scored shard but one
    assert out == [f"{n_files} shards OK"]


def test_verify_damaged_lists_everything(damaged, capsys):
    d, _, bad = damaged
    assert main(["verify", d]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    listing = {line.split()[1].rstrip(":"): line.split()[0] for line in out[:-1]}
    assert listing == {
        bad["flipped"]: "damaged",
        bad["truncated"]: "damaged",
        bad["truncated_gen"]: "damaged",
        bad["missing_field"]: "partial",
        bad["bad_offsets"]: "partial",
        bad["temporary"]: "temporary",
    }
    assert "ref_logprobs" in next(line for line in out if bad["missing_field"] in line)
    n_ok = 2 * STEPS * SHARDS - 1 - 5
    assert out[-1] == f"{n_ok} shards OK, 3 damaged, 2 partial, 1 temporary"
    rep = verify(Archive.open(d))
    assert not rep.ok and len(rep.good) == n_ok


def test_verify_catches_each_problem_alone(archive, tmp_path, capsys):
    import shutil

    from archive_data import flip_bytes

    d, _ = archive
    for shard, field in [("step_000004", x) for x in ("samples", "response", "prompt_tokens")] + [
        ("step_000000", x)
        for x in ("reward", "gen_logprobs", "prompt_offsets")  # version 1: a dataset per field
    ]:
        c = tmp_path / field
        shutil.copytree(f"{d}/rollouts", c)
        flip_bytes(str(c / shard / "scored_0000.h5"), field)
        assert main(["verify", str(c)]) == 1
        out = capsys.readouterr().out
        assert f"damaged   {shard}/scored_0000.h5: dataset {field} unreadable" in out
    c = tmp_path / "tmp_only"
    shutil.copytree(f"{d}/rollouts", c)
    (c / "step_000000" / ".gen_0009.h5.tmp-1").write_bytes(b"")
    assert main(["verify", str(c)]) == 1
    assert "temporary step_000000/.gen_0009.h5.tmp-1" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "nothing")]) == 2


def _one_line_warnings(err: str) -> list[str]:
    lines = [x for x in err.splitlines() if x]
    assert all(x.startswith("warning: ") for x in lines), err
    return lines


def test_summary_skips_damaged_with_warnings(damaged, capsys):
    d, truth, bad = damaged
    assert main(["summary", d, "--format", "json"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    warns = _one_line_warnings(cap.err)
    # flipped and missing-field scored shards fall back to their generated twin; step 2 shard 0 is lost
    assert len(warns) == 4
    assert any(bad["flipped"] in w and "falling back to the generated shard gen_0001.h5" in w for w in warns)
    assert any(bad["missing_field"] in w for w in warns)

    def loc(s):
        return f"step_{s['step']:06d}/scored_{s['shard']:04d}.h5"

    kept = []
    for s in truth:
        if loc(s) == bad["truncated"]:
            continue
        if loc(s) in (bad["flipped"], bad["missing_field"]):
            s = {**s, "scored": False, "reward": float("nan")}
        kept.append(s)
    exp = expected_summary(kept)
    assert [r["policy_version"] for r in rows] == sorted(exp)
    for r in rows:
        e = exp[r["policy_version"]]
        for k in ("samples", "scored", "reward_mean", "kl_mean", "response_len_mean", "eos_rate", "rep_3gram_rate"):
            assert r[k] == pytest.approx(float(e[k]), rel=1e-6), k


def test_export_and_plot_skip_damaged(damaged, tmp_path, capsys):
    d, truth, bad = damaged
    out = tmp_path / "x.parquet"
    assert main(["export", d, "--format", "parquet", "--out", str(out), "--tokens"]) == 0
    cap = capsys.readouterr()
    assert len(_one_line_warnings(cap.err.replace(f"wrote {len(pd.read_parquet(out))} samples to {out}\n", ""))) == 4
    lost = sum(1 for s in truth if (s["step"], s["shard"]) == (2, 0))
    assert len(pd.read_parquet(out)) == len(truth) - lost
    figs = tmp_path / "figs"
    assert main(["plot", d, "--out", str(figs)]) == 0
    assert len(_one_line_warnings(capsys.readouterr().err)) == 4
    assert all(os.path.getsize(figs / f) > 1000 for f in os.listdir(figs))


def test_foreign_h5_is_ignored_by_readers_and_listed_by_verify(archive, tmp_path, capsys):
    import shutil

    import h5py
    import numpy as np

    d, truth = archive
    bare = tmp_path / "bare"
    shutil.copytree(f"{d}/rollouts", bare)
    with h5py.File(bare / "notes.h5", "w") as f:
        f["x"] = np.arange(3)
    assert main(["summary", str(bare), "--format", "json"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and sum(r["samples"] for r in json.loads(cap.out)) == len(truth)
    assert main(["verify", str(bare)]) == 1
    out = capsys.readouterr().out
    assert "foreign   notes.h5: no schema_version attribute" in out and out.strip().endswith("1 foreign")
