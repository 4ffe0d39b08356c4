"""`summary`: per-version numbers against expectations computed independently from the truth."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from archive_expect import summary as expected_summary

from hpc_rlhf.archive import Archive, summarize
from hpc_rlhf.archive.cli import main


def _close(got, exp) -> bool:
    if exp is None or (isinstance(exp, float) and math.isnan(exp)):
        return got is None or (isinstance(got, float) and math.isnan(got))
    return got == pytest.approx(float(exp), rel=1e-6, abs=1e-9)


def _check(rows: list[dict], exp: dict[int, dict], n: int = 3) -> None:
    assert [int(r["policy_version"]) for r in rows] == sorted(exp)
    for r in rows:
        e = exp[int(r["policy_version"])]
        for k, v in e.items():
            assert _close(r[k], v), (r["policy_version"], k, r[k], v)


def test_summary_api_matches_numpy(archive):
    d, truth = archive
    rows = summarize(Archive.open(d))
    exp = expected_summary(truth)
    _check(rows, exp)
    # the generated-only shard counts as samples but not as scored ones
    last = rows[-1]
    assert last["samples"] > last["scored"]
    # reward rises with version in this archive
    means = [r["reward_mean"] for r in rows]
    assert means == sorted(means)


def test_summary_ngram_choice_and_filters(archive):
    d, truth = archive
    rows = summarize(Archive.open(d), ngram=2, versions=(1, 2))
    exp = {v: e for v, e in expected_summary(truth, n=2).items() if v in (1, 2)}
    _check(rows, exp, n=2)
    rows = summarize(Archive.open(d), ngram=None)
    assert not any(k.startswith("rep_") for k in rows[0])


def test_summary_cli_formats(archive, capsys):
    d, truth = archive
    exp = expected_summary(truth)
    assert main(["summary", d, "--format", "json"]) == 0
    _check(json.loads(capsys.readouterr().out), exp)

    assert main(["archive", "summary", d, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    conv = [{k: (float(v) if v != "" else math.nan) for k, v in r.items()} for r in rows]
    _check(conv, exp)

    assert main(["summary", d]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["version", "samples", "scored"]
    assert len(out) == 1 + len(exp)
    v0 = out[1].split()
    assert v0[0] == "0" and int(v0[1]) == exp[0]["samples"]
    assert float(v0[3]) == pytest.approx(exp[0]["reward_mean"], rel=1e-3)

    assert main(["summary", d, "--format", "json", "--bands", "--no-ngram"]) == 0
    r0 = json.loads(capsys.readouterr().out)[0]
    assert "reward_q25" in r0 and "kl_q75" in r0 and "rep_3gram_rate" not in r0


def test_summary_cli_user_errors(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert main(["summary", str(tmp_path)]) == 2
    assert "no rollout shards" in capsys.readouterr().err
