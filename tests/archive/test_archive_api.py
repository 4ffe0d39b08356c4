"""The Python API: discovery, filters, samples, derived fields, the vectorised helpers."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from archive_data import GEN_ONLY, SHARDS, STEPS
from archive_expect import distinct, kl_seq, rep_rate

from hpc_rlhf.archive import Archive, summarize
from hpc_rlhf.archive import derived as D
from hpc_rlhf.errors import UserError


def _uid(s) -> tuple[int, int]:
    return (int(s["prompt_index"]), int(s["sample_index"]))


def test_lists_shards_prefers_scored_and_keeps_generated_only(archive):
    d, _ = archive
    arc = Archive.open(d)
    assert len(arc.shards) == STEPS * SHARDS
    kinds = {(r.step, r.shard): r.kind for r in arc.shards}
    assert kinds[GEN_ONLY] == "generated"
    assert sum(k == "scored" for k in kinds.values()) == STEPS * SHARDS - 1
    for r in arc.shards:
        assert os.path.basename(r.path).startswith("scored_" if r.kind == "scored" else "gen_")
        if r.kind == "scored":
            assert r.generated_path and os.path.basename(r.generated_path).startswith("gen_")
    assert arc.tokenizer_path() == os.path.join(d, "tokenizer")
    assert arc.run_dir == os.path.abspath(d)
    assert list(arc.versions()) == [0, 1, 2, 3]
    assert arc.temporary == []


def test_samples_round_trip_tokens_and_nan_for_unscored(archive):
    d, truth = archive
    want = {_uid(s): s for s in truth}
    got = list(Archive.open(d).iter_samples())
    assert len(got) == len(truth)
    for s in got:
        t = want[_uid(s)]
        assert s["prompt_tokens"].tolist() == t["prompt_tokens"]
        assert s["response_tokens"].tolist() == t["response_tokens"]
        assert s["policy_version"] == t["policy_version"] and s["step"] == t["step"] and s["eos"] == t["eos"]
        assert s["response_len"] == len(t["response_tokens"])
        if t["scored"]:
            assert s["reward"] == pytest.approx(float(t["reward"]))
        else:
            assert math.isnan(s["reward"])


def test_dataframe_derived_fields(archive):
    d, truth = archive
    want = {_uid(s): s for s in truth}
    df = Archive.open(d).to_dataframe(
        [
            "prompt_index",
            "sample_index",
            "kl_seq",
            "kl_per_token",
            "response_len",
            "rep_3gram",
            "distinct_2",
            "rep_1gram",
        ]
    )
    assert len(df) == len(truth)
    for r in df.itertuples(index=False):
        t = want[(r.prompt_index, r.sample_index)]
        k = kl_seq(t)
        n = len(t["response_tokens"])
        assert r.response_len == n
        if math.isnan(k):
            assert math.isnan(r.kl_seq) and math.isnan(r.kl_per_token)
        else:
            assert r.kl_seq == pytest.approx(k, rel=1e-9, abs=1e-12)
            if n == 0:
                assert r.kl_seq == 0.0 and math.isnan(r.kl_per_token)
            else:
                assert r.kl_per_token == pytest.approx(k / n, rel=1e-9, abs=1e-12)
        for got, exp in (
            (r.rep_3gram, rep_rate(t["response_tokens"], 3)),
            (r.distinct_2, distinct(t["response_tokens"], 2)),
            (r.rep_1gram, rep_rate(t["response_tokens"], 1)),
        ):
            assert (math.isnan(got) and math.isnan(exp)) or got == pytest.approx(exp, abs=1e-6)


@pytest.mark.parametrize(
    "filters, pred",
    [
        ({"versions": 2}, lambda s: s["policy_version"] == 2),
        ({"versions": (1, 2)}, lambda s: 1 <= s["policy_version"] <= 2),
        ({"versions": (None, 0)}, lambda s: s["policy_version"] == 0),
        ({"prompts": 211}, lambda s: s["prompt_index"] == 211),
        ({"prompts": {0, 11, 420}}, lambda s: s["prompt_index"] in {0, 11, 420}),
        ({"rewards": (0.5, None)}, lambda s: s["scored"] and s["reward"] >= np.float32(0.5)),
        ({"rewards": (-0.2, 0.3)}, lambda s: s["scored"] and np.float32(-0.2) <= s["reward"] <= np.float32(0.3)),
        ({"steps": (3, 4)}, lambda s: s["step"] >= 3),
        (
            {"versions": (1, 3), "rewards": (0.4, None), "prompts": [x for x in range(300)]},
            lambda s: (
                1 <= s["policy_version"] <= 3
                and s["scored"]
                and s["reward"] >= np.float32(0.4)
                and s["prompt_index"] < 300
            ),
        ),
    ],
)
def test_filters(archive, filters, pred):
    d, truth = archive
    arc = Archive.open(d)
    want = sorted(_uid(s) for s in truth if pred(s))
    assert want, "the filter should select something"
    t = arc.table(["prompt_index", "sample_index"], **filters)
    assert sorted(zip(t["prompt_index"].tolist(), t["sample_index"].tolist())) == want
    # batches carry the same rows, with their tokens re-packed consistently
    by = {_uid(s): s for s in truth}
    for b in arc.iter_batches(["prompt_index", "sample_index", "response_tokens"], **filters):
        for i in range(len(b)):
            t_ = by[(int(b.columns["prompt_index"][i]), int(b.columns["sample_index"][i]))]
            assert b.row(i, "response_tokens").tolist() == t_["response_tokens"]


def test_bare_folder_and_renamed_files(archive, tmp_path):
    d, truth = archive
    ref = summarize(Archive.open(d))
    # a copied rollouts/ folder (no run dir around it)
    bare = tmp_path / "copy"
    shutil.copytree(os.path.join(d, "rollouts"), bare)
    assert summarize(Archive.open(str(bare))) == ref
    # flat folder of arbitrarily named files: identified by their attributes
    flat = tmp_path / "flat" / "nested"
    flat.mkdir(parents=True)
    for i, r in enumerate(Archive.open(d).shards):
        shutil.copy(r.path, flat / f"x{i:03d}.h5")
        if r.generated_path:
            shutil.copy(r.generated_path, flat / f"y{i:03d}.h5")
    arc = Archive.open(str(tmp_path / "flat"))
    assert len(arc.shards) == STEPS * SHARDS
    assert summarize(arc) == ref
    # one shard file
    one = Archive.open(Archive.open(d).shards[0].path)
    assert len(one.table(["reward"])["reward"]) == sum(1 for s in truth if s["step"] == 0 and s["shard"] == 0)


def test_errors(archive, tmp_path):
    d, _ = archive
    with pytest.raises(UserError, match="does not exist"):
        Archive.open(str(tmp_path / "nope"))
    empty = Archive.open(str(tmp_path))
    with pytest.raises(UserError, match="no rollout shards"):
        empty.require_shards()
    with pytest.raises(UserError, match="unknown field"):
        Archive.open(d).table(["rewrd"])
    with pytest.raises(UserError, match="per-token"):
        Archive.open(d).table(["response_tokens"])


def test_seq_sums_with_empty_rows():
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32)
    off = np.array([0, 0, 2, 2, 5, 5])
    assert D.seq_sums(vals, off).tolist() == [0.0, 3.0, 0.0, 12.0, 0.0]
    assert D.seq_sums(np.zeros(0), np.array([0, 0])).tolist() == [0.0]


def test_ngram_counts_exact_and_hashed_agree_with_sets():
    rng = np.random.default_rng(1)
    for vocab in (7, 200_000, 2**31 - 1):  # packed exactly, then hashed (ids too wide to pack)
        seqs = [rng.integers(0, vocab, rng.integers(0, 30)).tolist() for _ in range(300)]
        seqs += [[5, 6] * 10, [9] * 4]
        flat = np.array([t for s in seqs for t in s], dtype=np.int64)
        off = np.zeros(len(seqs) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(s) for s in seqs])
        for n in (1, 2, 3, 4):
            total, dist = D.ngram_counts(flat, off, n)
            assert total.tolist() == [max(len(s) - n + 1, 0) for s in seqs]
            assert dist.tolist() == [len({tuple(s[i : i + n]) for i in range(len(s) - n + 1)}) for s in seqs]


def test_select_ragged():
    flat = np.arange(10)
    off = np.array([0, 3, 3, 7, 10])
    f, o = D.select_ragged(flat, off, np.array([True, True, False, True]))
    assert f.tolist() == [0, 1, 2, 7, 8, 9] and o.tolist() == [0, 3, 3, 6]


def test_archive_module_imports_no_torch_mpi_or_transformers():
    import subprocess
    import sys

    code = (
        "import sys, hpc_rlhf.archive, hpc_rlhf.archive.cli;"
        "bad=[m for m in ('torch','mpi4py','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_empty_shard_and_empty_responses(tmp_path):
    from hpc_rlhf.rollout.shard import write_shard

    def shard(n_resp: list[int]) -> dict:
        n = len(n_resp)
        ro = np.concatenate([[0], np.cumsum(n_resp)]).astype(np.int64)
        r = int(ro[-1])
        return {
            "prompt_index": np.arange(n), "sample_index": np.zeros(n), "policy_version": np.zeros(n), "step": np.zeros(n),
            "seed": np.zeros(n), "prompt_len": np.ones(n), "response_len": np.array(n_resp), "eos": np.zeros(n),
            "prompt_offsets": np.arange(n + 1), "response_offsets": ro, "prompt_tokens": np.full(n, 5),
            "response_tokens": np.full(r, 7), "gen_logprobs": np.full(r, -1.0), "ref_logprobs": np.full(r, -1.5),
            "reward": np.arange(n, dtype=np.float32), "group_id": np.arange(n),
            "reward_sources": np.arange(n, dtype=np.float32).reshape(n, 1),
        }  # fmt: skip

    attrs = {"kind": "scored", "policy_version": 0, "step": 0, "num_samples": 0, "shard_index": 0}
    attrs.update(reward_sources=["rm"], reward_weights=[1.0])
    write_shard(str(tmp_path / "step_000000" / "scored_0000.h5"), shard([]), attrs)
    write_shard(
        str(tmp_path / "step_000000" / "scored_0001.h5"),
        shard([0, 3, 0]),
        {**attrs, "num_samples": 3, "shard_index": 1},
    )
    arc = Archive.open(str(tmp_path))
    t = arc.table(["reward", "kl_seq", "rep_2gram"])
    assert t["reward"].tolist() == [0.0, 1.0, 2.0]
    assert t["kl_seq"].tolist() == [0.0, 1.5, 0.0]
    assert math.isnan(t["rep_2gram"][0]) and t["rep_2gram"][1] == pytest.approx(0.5)
    (row,) = summarize(arc)
    assert row["samples"] == 3 and row["kl_mean"] == pytest.approx(0.5) and row["kl_per_token"] == pytest.approx(0.5)
