"""`export`: parquet / csv / jsonl written in chunks read back equal to the archive's samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from archive_expect import kl_seq, rep_rate

from hpc_rlhf.archive import Archive, export
from hpc_rlhf.archive.cli import main
from hpc_rlhf.rollout.schema import PER_SAMPLE


def _read(path, fmt) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True, dtype=False)


def _tok_list(v, fmt):
    if fmt == "csv":
        return [] if (isinstance(v, float) and math.isnan(v)) else [int(x) for x in str(v).split()]
    return [int(x) for x in v]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_round_trip(archive, tmp_path, fmt):
    d, truth = archive
    out = tmp_path / f"s.{fmt}"
    n = export(Archive.open(d), str(out), fmt, tokens=True, ngram=3, chunk_rows=7)  # many chunks
    assert n == len(truth)
    df = _read(out, fmt)
    assert list(df.columns) == [
        *PER_SAMPLE,
        "kl_seq",
        "kl_per_token",
        "reward/rm",  # the reward sources, in order of first appearance: versions 1-2 have one
        "reward/judge",
        "reward/correct",
        "rep_3gram",
        "distinct_3",
        "prompt_tokens",
        "response_tokens",
    ]
    assert len(df) == len(truth)
    by = {(s["prompt_index"], s["sample_index"]): s for s in truth}
    for r in df.to_dict("records"):
        t = by[(int(r["prompt_index"]), int(r["sample_index"]))]
        for k in ("policy_version", "step", "seed", "eos"):
            assert int(r[k]) == int(t[k])
        assert int(r["response_len"]) == len(t["response_tokens"])
        assert int(r["prompt_len"]) == len(t["prompt_tokens"])
        assert _tok_list(r["prompt_tokens"], fmt) == t["prompt_tokens"]
        assert _tok_list(r["response_tokens"], fmt) == t["response_tokens"]
        assert int(r["group_id"]) == t["group_id"]
        for name in ("rm", "judge", "correct"):  # NaN (null) where the shard has no such source
            got, exp = r[f"reward/{name}"], t["sources"].get(name)
            assert (got is None or math.isnan(got)) if exp is None else np.float32(got) == exp, (name, got, exp)
        for k, exp in (
            ("reward", float(t["reward"])),
            ("kl_seq", kl_seq(t)),
            ("rep_3gram", rep_rate(t["response_tokens"], 3)),
        ):
            got = r[k]
            if math.isnan(exp):
                assert got is None or math.isnan(got), (k, got)
            else:
                assert np.float32(got) == np.float32(exp) if k != "kl_seq" else got == pytest.approx(exp, rel=1e-9)


def test_export_equals_dataframe_and_filters(archive, tmp_path):
    d, _ = archive
    arc = Archive.open(d)
    fields = [*PER_SAMPLE, "kl_seq", "kl_per_token", *(f"reward/{n}" for n in arc.reward_sources())]
    ref = arc.to_dataframe(fields, versions=(1, 2), rewards=(0.0, None))
    out = tmp_path / "f.parquet"
    n = export(arc, str(out), "parquet", chunk_rows=5, versions=(1, 2), rewards=(0.0, None))
    got = pd.read_parquet(out)
    assert n == len(ref) > 0
    pd.testing.assert_frame_equal(got, ref)


def test_export_cli_text_and_empty(archive, tmp_path, capsys):
    d, truth = archive
    out = tmp_path / "t.jsonl"
    assert main(["export", d, "--format", "jsonl", "--out", str(out), "--text", "--version-range", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = [s for s in truth if s["policy_version"] == 3]
    assert len(rows) == len(want)
    words = {i: w for w, i in __import__("archive_data").VOCAB.items()}
    by = {(s["prompt_index"], s["sample_index"]): s for s in want}
    for r in rows:
        t = by[(r["prompt_index"], r["sample_index"])]
        assert r["response_text"].split() == [words[i] for i in t["response_tokens"]]
        assert r["prompt_text"].split() == [words[i] for i in t["prompt_tokens"]]
        assert "response_tokens" not in r
    # a filter matching nothing still writes a valid (empty) file with the columns
    out2 = tmp_path / "e.parquet"
    assert main(["export", d, "--format", "parquet", "--out", str(out2), "--version-range", "99:"]) == 0
    e = pd.read_parquet(out2)
    assert len(e) == 0 and "reward" in e.columns
    assert main(["export", d, "--format", "csv", "--out", str(tmp_path / "x.csv"), "--fields", "reward,nope"]) == 2
    assert "unknown field" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
