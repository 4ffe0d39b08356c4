"""Shard write/read round trip, damage detection, atomic visibility, reuse checks."""

import os

import numpy as np
import pytest

from hpc_rlhf.errors import ShardError
from hpc_rlhf.rollout.schema import FIELDS, SCHEMA_VERSION, markdown_table
from hpc_rlhf.rollout.shard import pack_ragged, read_shard, reusable, unpack_ragged, write_shard


def make_data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(4, 100, rng.integers(3, 9)) for _ in range(n)]
    resps = [rng.integers(4, 100, rng.integers(1, 17)) for _ in range(n)]
    pt, po = pack_ragged(prompts, "int32")
    rt, ro = pack_ragged(resps, "int32")
    r = len(rt)
    data = {
        "prompt_index": np.arange(n),
        "sample_index": np.zeros(n),
        "policy_version": np.full(n, 3),
        "step": np.full(n, 4),
        "seed": rng.integers(0, 2**62, n),
        "prompt_len": np.diff(po),
        "response_len": np.diff(ro),
        "eos": rng.integers(0, 2, n),
        "prompt_offsets": po,
        "response_offsets": ro,
        "prompt_tokens": pt,
        "response_tokens": rt,
        "gen_logprobs": -rng.random(r),
        "ref_logprobs": -rng.random(r),
        "reward": rng.normal(size=n),
    }
    attrs = {
        "kind": "scored",
        "step": 4,
        "shard_index": 1,
        "policy_version": 3,
        "num_samples": n,
        "config_fingerprint": "abc",
    }
    return data, attrs, prompts, resps


def test_round_trip(tmp_path):
    data, attrs, prompts, resps = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    got, a = read_shard(p)
    assert a["schema_version"] == SCHEMA_VERSION and a["num_samples"] == 50
    for f in FIELDS:
        assert got[f.name].dtype == np.dtype(f.dtype)
        assert np.array_equal(got[f.name], data[f.name].astype(f.dtype))
    assert all(
        np.array_equal(a, b) for a, b in zip(unpack_ragged(got["response_tokens"], got["response_offsets"]), resps)
    )
    assert os.listdir(tmp_path) == ["s.h5"]  # no temporary left behind
    assert reusable(p, {"step": 4, "shard_index": 1}) and not reusable(p, {"step": 5})


def _flip_bytes_in_dataset(path, name):
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[name]
        off = ds.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(off + 8)
        b = fh.read(4)
        fh.seek(off + 8)
        fh.write(bytes(x ^ 0xFF for x in b))


def test_corrupted_chunk_is_detected(tmp_path):
    data, attrs, _, _ = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    _flip_bytes_in_dataset(p, "gen_logprobs")
    with pytest.raises(ShardError, match="damaged"):
        read_shard(p)
    assert not reusable(p, {})


def test_truncated_and_foreign_files(tmp_path):
    data, attrs, _, _ = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)
    with pytest.raises(ShardError):
        read_shard(p)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="junk.h5"):
        read_shard(str(junk))


def test_missing_field_is_refused_at_write(tmp_path):
    data, attrs, _, _ = make_data()
    del data["reward"]
    with pytest.raises(ValueError, match="reward"):
        write_shard(str(tmp_path / "s.h5"), data, attrs)


def test_schema_doc_is_current():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "rollout_format.md")).read()
    assert markdown_table() in doc, "docs/rollout_format.md is stale: paste schema.markdown_table() into it"
