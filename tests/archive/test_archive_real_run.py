"""The archive API and commands on the archive of a real (tiny, 3-rank) training run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hpc_rlhf.archive import Archive
from tests.conftest import REPO, TINY, cli

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_rm, mpiexec):
    d = tmp_path_factory.mktemp("arc") / "run"
    cli("train", TINY, f"run_dir={d}", *tiny_rm["overrides"], "total_steps=3")
    return d


def test_summary_matches_the_ledger_and_shards(run):
    arc = Archive.open(str(run))
    df = arc.to_dataframe()
    ledger = [json.loads(x) for x in open(run / "ledger.jsonl")]
    assert len(df) == sum(len(x["prompt_index"]) for x in ledger) == 3 * 16
    assert sorted(df["policy_version"].unique()) == [0, 1, 2]
    for x in ledger:
        got = df[df["step"] == x["step"]].sort_values(["prompt_index", "sample_index"])
        want = sorted(zip(x["prompt_index"], x["sample_index"]))
        assert list(zip(got["prompt_index"], got["sample_index"])) == want
    out = subprocess.run(
        [sys.executable, "-m", "hpc_rlhf.launch.cli", "archive", "summary", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    rows = json.loads(out.stdout)
    rows = rows if isinstance(rows, list) else rows.get("versions", rows)
    assert len(rows) == 3
    assert np.isclose(rows[0]["reward_mean"], df[df["policy_version"] == 0]["reward"].mean(), rtol=1e-5)


def test_show_decodes_with_the_run_tokenizer_and_verify_passes(run):
    out = cli("archive", "show", str(run), "--version", "2", "--top", "1").stdout
    assert "<eos>" in out or any(w.isalpha() for w in out.split())
    assert "prompt" in out and "response" in out
    assert cli("archive", "verify", str(run)).returncode == 0
