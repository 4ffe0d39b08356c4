"""The archive API and commands on the archive of a real (tiny, 3-rank) training run."""

import glob
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from hpc_rlhf.archive import Archive
from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import SPECIALS, words
from hpc_rlhf.rollout.shard import read_shard
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
    assert [r["policy_version"] for r in rows] == [0, 1, 2]
    for r in rows:
        want = df[df["policy_version"] == r["policy_version"]]["reward"].mean()
        assert np.isclose(r["reward_mean"], want, rtol=1e-5), (r, want)


def _version_rows(run, version: int) -> list[dict]:
    """Every scored sample of a policy version, read from the shards themselves (not through the archive)."""
    rows = []
    for path in sorted(glob.glob(f"{run}/rollouts/*/scored_*.h5")):
        d, _ = read_shard(path)
        for i in np.flatnonzero(d["policy_version"] == version):
            p0, p1, r0, r1 = d["prompt_offsets"][i : i + 2].tolist() + d["response_offsets"][i : i + 2].tolist()
            rows.append(
                {
                    "key": (int(d["prompt_index"][i]), int(d["sample_index"][i])),
                    "reward": float(d["reward"][i]),
                    "prompt": d["prompt_tokens"][p0:p1].tolist(),
                    "response": d["response_tokens"][r0:r1].tolist(),
                }
            )
    return rows


def test_show_decodes_with_the_run_tokenizer_and_verify_passes(run):
    """`show --top 1` picks the best-rewarded sample of the version and prints its tokens as the run's
    tokenizer decodes them: the demo's words for exactly those ids, EOS visible."""
    out = cli("archive", "show", str(run), "--version", "2", "--top", "1").stdout
    head, prompt, response = out.strip().splitlines()
    m = re.match(r"=== version 2\s+step \d+\s+prompt (\d+)\s+sample (\d+)\s+reward (\S+)", head)
    assert m, head
    rows = _version_rows(run, 2)
    best = max(rows, key=lambda r: r["reward"])
    assert (int(m.group(1)), int(m.group(2))) == best["key"]
    assert float(m.group(3)) == pytest.approx(best["reward"], rel=1e-3)
    vocab = SPECIALS + words(load_config(str(run / "config.yaml")).task.vocab_words)  # id -> word of the run
    assert prompt == "prompt:   " + " ".join(vocab[i] for i in best["prompt"])
    assert response == "response: " + " ".join(vocab[i] for i in best["response"])
    assert cli("archive", "verify", str(run)).returncode == 0
