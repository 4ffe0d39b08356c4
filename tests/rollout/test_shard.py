"""Shard write/read round trip, damage detection, atomic visibility, reuse checks, older versions read as
version 3 (group ids and per-source rewards)."""

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
        "group_id": np.arange(n) // 2,
        "reward_sources": rng.normal(size=(n, 2)),
    }
    attrs = {
        "kind": "scored",
        "step": 4,
        "shard_index": 1,
        "policy_version": 3,
        "num_samples": n,
        "config_fingerprint": "abc",
        "reward_sources": ["rm", "correct"],
        "reward_weights": [1.0, 0.5],
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
        fh.write(bytes(x ^ 0x5A for x in b))  # not 0xFF: fletcher32 cannot tell 0x0000 from 0xFFFF


@pytest.mark.parametrize("dataset", ["samples", "prompt_tokens", "response"])
def test_corrupted_chunk_is_detected(tmp_path, dataset):
    data, attrs, _, _ = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    _flip_bytes_in_dataset(p, dataset)
    with pytest.raises(ShardError, match=f"damaged: dataset {dataset} unreadable") as e:
        read_shard(p)
    assert e.value.status == "damaged"
    assert not reusable(p, {})


def test_version_3_layout_is_four_datasets_and_json_metadata(tmp_path):
    """What an analyst opening a shard with plain h5py (or pandas) finds."""
    import json

    import h5py
    import pandas as pd

    data, attrs, prompts, resps = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    with h5py.File(p, "r") as f:
        assert sorted(f) == ["prompt_tokens", "response", "reward_sources", "samples"]
        assert sorted(f.attrs) == ["meta", "schema_version"] and f.attrs["schema_version"] == 3
        meta = json.loads(f.attrs["meta"])
        samples = pd.DataFrame(f["samples"][()])
        sources = pd.DataFrame(f["reward_sources"][()])
        response = f["response"][()]
        assert all(f[name].fletcher32 for name in f)
    assert {k: meta[k] for k in attrs} == attrs and meta["created_unix"] > 0 and meta["schema_version"] == 3
    assert list(samples.columns) == [
        "prompt_index",
        "sample_index",
        "policy_version",
        "step",
        "seed",
        "prompt_len",
        "response_len",
        "eos",
        "reward",
        "group_id",
    ]
    assert list(sources.columns) == ["rm", "correct"]  # one column per source, named as the source
    assert np.array_equal(sources.to_numpy(), data["reward_sources"].astype(np.float32))
    assert samples["response_len"].tolist() == [len(r) for r in resps]
    assert np.allclose(samples["reward"], data["reward"])
    assert response.dtype.names == ("response_tokens", "gen_logprobs", "ref_logprobs")
    assert response["response_tokens"].tolist() == np.concatenate(resps).tolist()


def test_generated_shard_has_only_generated_fields(tmp_path):
    data, attrs, _, _ = make_data()
    gen = {k: v for k, v in data.items() if k not in ("ref_logprobs", "reward", "group_id", "reward_sources")}
    p = write_shard(str(tmp_path / "g.h5"), gen, {**attrs, "kind": "generated"})
    got, a = read_shard(p)
    assert a["kind"] == "generated" and set(got) == set(gen)
    with pytest.raises(ShardError, match="generated shard misses field.s. ref_logprobs") as e:
        read_shard(p, ["response_tokens", "ref_logprobs"])
    assert e.value.status == "partial"
    with pytest.raises(ShardError, match="generated shard misses field.s. reward_sources"):
        read_shard(p, ["reward_sources"])
    got, _ = read_shard(p, ["group_id"])  # not stored: a group is one prompt's samples at one step
    assert got["group_id"].dtype == np.int64 and np.array_equal(got["group_id"], data["prompt_index"])


def test_field_subsets_read_only_what_is_asked(tmp_path):
    data, attrs, _, resps = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    got, _ = read_shard(p, ["response_offsets", "reward"])
    assert set(got) == {"response_offsets", "reward"}
    assert np.array_equal(got["response_offsets"], data["response_offsets"])
    got, _ = read_shard(p, ["prompt_tokens"])
    assert set(got) == {"prompt_tokens"} and np.array_equal(got["prompt_tokens"], data["prompt_tokens"])


@pytest.mark.parametrize("version", [1, 2])
def test_older_versions_read_as_version_3(tmp_path, version):
    """Archives of hpc-rlhf 0.1.0 (v1: one dataset per field) and of v2 (no group_id, no per-source
    rewards) read with every version-3 field: group_id = prompt_index, one source `rm` = reward."""
    from shard_v1 import write_shard_v1
    from shard_v2 import write_shard_v2

    writer = {1: write_shard_v1, 2: write_shard_v2}[version]
    data, attrs, _, _ = make_data()
    old_attrs = {k: v for k, v in attrs.items() if not k.startswith("reward_")}
    old, a = read_shard(writer(str(tmp_path / "old.h5"), data, old_attrs))
    new, _ = read_shard(write_shard(str(tmp_path / "v3.h5"), data, attrs))
    assert a["schema_version"] == version and {k: a[k] for k in old_attrs} == old_attrs
    assert a["reward_sources"] == ["rm"] and a["reward_weights"] == [1.0]
    assert set(old) == set(new) and all(old[k].dtype == new[k].dtype for k in new)
    assert all(np.array_equal(old[k], new[k]) for k in new if k not in ("group_id", "reward_sources"))
    assert np.array_equal(old["group_id"], data["prompt_index"])
    assert old["reward_sources"].shape == (50, 1) and np.array_equal(old["reward_sources"][:, 0], new["reward"])
    assert reusable(str(tmp_path / "old.h5"), {"step": 4})
    got, _ = read_shard(str(tmp_path / "old.h5"), ["reward_sources", "step"])  # the derived only, as asked
    assert set(got) == {"reward_sources", "step"}


def test_reward_sources_must_be_named_and_agree(tmp_path):
    import h5py

    data, attrs, _, _ = make_data()
    for bad in ({"reward_sources": ["rm"]}, {"reward_sources": ["a", "a"]}, {"reward_weights": [1.0]}):
        with pytest.raises(ValueError, match="reward_sources/reward_weights must name and weigh the 2 source"):
            write_shard(str(tmp_path / "w.h5"), data, {**attrs, **bad})
    with pytest.raises(ValueError, match=r"reward_sources has shape \(50,\)"):
        write_shard(str(tmp_path / "w.h5"), dict(data, reward_sources=data["reward"]), attrs)
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    with h5py.File(p, "r+") as f:  # a table whose columns are not the sources the metadata names
        t = f["reward_sources"][()]
        del f["reward_sources"]
        f["reward_sources"] = t[["rm"]]
    with pytest.raises(ShardError, match="reward_sources has columns") as e:
        read_shard(p)
    assert e.value.status == "partial"
    assert set(read_shard(p, ["reward", "group_id"])[0]) == {"reward", "group_id"}  # the rest still reads


def test_inconsistent_lengths_and_foreign_versions_are_refused(tmp_path):
    import json

    import h5py

    data, attrs, _, _ = make_data()
    p = write_shard(str(tmp_path / "s.h5"), data, attrs)
    with h5py.File(p, "r+") as f:
        t = f["samples"][()]
        t["response_len"][0] += 1
        f["samples"][...] = t
    with pytest.raises(ShardError, match="response_len sums to") as e:
        read_shard(p)
    assert e.value.status == "partial"
    with h5py.File(p, "r+") as f:  # a future writer
        f.attrs["schema_version"] = 7
        f.attrs["meta"] = np.bytes_(json.dumps({**json.loads(f.attrs["meta"]), "schema_version": 7}))
    with pytest.raises(ShardError, match="schema version 7") as e:
        read_shard(p)
    assert e.value.status == "foreign"
    bad = dict(data, response_offsets=data["response_offsets"] + 1)
    with pytest.raises(ValueError, match="response_offsets are not the running sum of response_len"):
        write_shard(str(tmp_path / "w.h5"), bad, attrs)


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
    assert markdown_table() in doc, "docs/rollout_format.md is stale: run python tools/render_docs.py"
