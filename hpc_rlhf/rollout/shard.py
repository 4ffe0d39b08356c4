"""Write and read rollout shards (HDF5), crash-consistently.

    write_shard(path, data, attrs)      # tmp name -> close -> os.replace (durable=True: fsyncs too)
    data, attrs = read_shard(path)      # raises ShardError on a damaged, partial or foreign file
    rundir.sync_paths(paths)            # fsync many files (and then their folders) at once

Readers only ever see complete files: a shard exists under its final name only after the rename.
Durability is separate from visibility: by default a shard is not fsynced when written (a killed
process loses nothing that reached the page cache, and the next rank reads it at once); the train
lead makes every shard of the steps a checkpoint covers durable before committing it
(`checkpoint.sync_rollouts`, docs/checkpointing.md). A shard damaged by a machine crash before that
fails its checksums and is regenerated on resume, bit-identically.
HDF5 file locking is off (`locking=False`): shards are written once under a private temporary
name, so no lock is needed, and flock is unreliable on Lustre and NFS.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import h5py
import numpy as np

from hpc_rlhf.errors import ShardError, first_line
from hpc_rlhf.rollout.h5io import bad, create, fapl, get_attr, read_raw, set_attr
from hpc_rlhf.rollout.schema import (
    BY_NAME,
    DATASETS,
    DERIVED,
    KINDS,
    LEGACY_SOURCE,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    dataset_of,
    fields_for,
)
from hpc_rlhf.rundir import fsync_dir, fsync_file, tmp_path

# Measured with tools/bench/io_bench.py (docs/performance.md): gzip costs far more time than the
# bytes it saves on token/log-prob data, and lzf saves little on random-looking int32/float32.
COMPRESSION: Optional[str] = None


def normalize(data: dict[str, np.ndarray], kind: str, where: str = "shard") -> dict[str, np.ndarray]:
    """Every field of `kind` as the contiguous array of its schema dtype: exactly what a read of the
    shard returns (the single-rank loop hands these to the next role instead of re-reading the file)."""
    missing = [f.name for f in fields_for(kind) if f.name not in data]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    out = {f.name: np.ascontiguousarray(data[f.name], dtype=f.dtype) for f in fields_for(kind)}
    src = out.get("reward_sources")
    if src is not None and (src.ndim != 2 or len(src) != len(out["prompt_index"])):
        raise ValueError(f"{where}: reward_sources has shape {src.shape}, expected (N samples, S sources)")
    return out


def write_shard(
    path: str,
    data: dict[str, np.ndarray],
    attrs: dict,
    compression: Optional[str] = COMPRESSION,
    durable: bool = False,
) -> str:
    """Write `data` (every field of attrs['kind']) to `path` atomically, in the current schema version;
    `durable`: fsync the file and the rename before returning. Returns path."""
    kind = attrs["kind"]
    arrays = normalize(data, kind, f"shard {path}")
    _check_offsets_agree(path, arrays)
    _check_sources_named(path, arrays, attrs)
    meta = {**{k: _plain(v) for k, v in attrs.items()}, "schema_version": SCHEMA_VERSION, "created_unix": time.time()}
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = tmp_path(path)
    with h5py.File(h5py.h5f.create(tmp.encode(), h5py.h5f.ACC_TRUNC, fapl=fapl())) as f:
        for name, names in _layout(kind):
            create(f, name, arrays[name] if names is None else _table(arrays, names), compression)
        if "reward_sources" in arrays:  # a table: one column per source, named as the source
            cols = {n: arrays["reward_sources"][:, j] for j, n in enumerate(attrs["reward_sources"])}
            create(f, "reward_sources", _table(cols, list(cols)), compression)
        set_attr(f, "schema_version", np.array(SCHEMA_VERSION, dtype=np.int64))
        set_attr(f, "meta", np.array(json.dumps(meta, sort_keys=True).encode()))  # fixed-length ASCII
    if durable:
        fsync_file(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(d)
    return path


def _layout(kind: str) -> list[tuple[str, Optional[list[str]]]]:
    """The datasets of a shard of `kind` but `reward_sources`: (name, its table's columns; None for a
    plain array)."""
    cols: dict[str, list[str]] = {}
    for fl in fields_for(kind):
        if dataset_of(fl.name):
            cols.setdefault(dataset_of(fl.name), []).append(fl.name)
    return [(n, None if n == "prompt_tokens" else cols[n]) for n in DATASETS if n != "reward_sources"]


def _check_sources_named(path: str, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """A scored shard's metadata names each column of reward_sources once, and gives its weight."""
    if "reward_sources" not in arrays:
        return
    names, weights, s = (
        list(attrs.get("reward_sources", [])),
        list(attrs.get("reward_weights", [])),
        arrays["reward_sources"].shape[1],
    )
    if len(names) != s or len(set(names)) != s or len(weights) != s:
        raise ValueError(
            f"shard {path}: attrs reward_sources/reward_weights must name and weigh the {s} source columns"
        )


def _table(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Equal-length arrays -> one packed structured array (an HDF5 compound dataset, a table)."""
    t = np.empty(len(arrays[names[0]]), dtype=[(n, arrays[n].dtype) for n in names])
    for n in names:
        t[n] = arrays[n]
    return t


def _plain(v):
    """A metadata value as a JSON-able Python scalar (numpy scalars from a read are converted)."""
    return v.item() if isinstance(v, np.generic) else v


def _lengths_to_offsets(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def _check_offsets_agree(path: str, arrays: dict[str, np.ndarray]) -> None:
    """The offsets handed to the writer must be what a reader derives from the lengths (a writer bug
    otherwise: version 2 stores only the lengths)."""
    for off, length in (("prompt_offsets", "prompt_len"), ("response_offsets", "response_len")):
        if not np.array_equal(arrays[off], _lengths_to_offsets(arrays[length])):
            raise ValueError(f"shard {path}: {off} are not the running sum of {length}")


NOT_A_SHARD = "no schema_version attribute: not a rollout shard"


def _meta(f: h5py.File, path: str) -> dict:
    """The shard's metadata (`schema_version` plus the keys of ATTRS), whatever its version. From
    version 2 on, `meta` repeats schema_version, so a reader opens one attribute, not two."""
    try:
        try:
            attrs = json.loads(get_attr(f, "meta"))
        except KeyError:  # version 1, or not a shard
            try:
                attrs = {"schema_version": int(get_attr(f, "schema_version"))}
            except KeyError:
                raise bad(path, "foreign", NOT_A_SHARD) from None
        ver = attrs.get("schema_version")
        if ver not in READABLE_VERSIONS:
            raise bad(path, "foreign", f"schema version {ver}, this reader knows {list(READABLE_VERSIONS)}")
        if ver == 1:
            attrs = dict(f.attrs)
    except ShardError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise bad(path, "damaged", f"attributes unreadable ({first_line(e)})") from None
    if str(attrs.get("kind")) not in KINDS:
        raise bad(path, "partial", f"attribute kind={attrs.get('kind')!r}, expected one of {list(KINDS)}")
    if "num_samples" not in attrs:
        raise bad(path, "partial", "attribute num_samples missing")
    if int(attrs["schema_version"]) < 3 and str(attrs["kind"]) == "scored":  # read as version 3: schema.DERIVED
        attrs = {**attrs, "reward_sources": [LEGACY_SOURCE], "reward_weights": [1.0]}
    return attrs


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(h5py.h5f.open(path.encode(), h5py.h5f.ACC_RDONLY, fapl=fapl()))
    except (OSError, ValueError) as e:
        if not os.path.exists(path):
            raise ShardError(f"shard '{path}' does not exist", "damaged", "does not exist") from None
        raise bad(path, "damaged", f"not a readable HDF5 file ({first_line(e)})") from None


def read_attrs(path: str) -> dict:
    """The shard's metadata without reading its data. Raises ShardError."""
    with _open(path) as f:
        return _meta(f, path)


def read_shard(path: str, fields: Optional[list[str]] = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read (and checksum) a shard of any readable version, as version 3: (every field of its kind, or
    `fields`, as contiguous arrays of the schema dtypes; metadata). A field an older version (or a
    generated shard) does not store is derived when it can be (schema.DERIVED, the legacy reward
    source). Raises ShardError when damaged or partial."""
    with _open(path) as f:
        attrs = _meta(f, path)
        kind, ver = str(attrs["kind"]), int(attrs["schema_version"])
        names = list(fields) if fields is not None else [fl.name for fl in fields_for(kind)]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown shard fields {unknown}")
        stored = {fl.name for fl in fields_for(kind, ver)}
        derive = {n: _DERIVE[n] for n in names if n not in stored and (n in DERIVED or (n, kind) == _LEGACY)}
        read = list(dict.fromkeys([n for n in names if n not in derive] + list(derive.values())))
        if ver == 1:
            data = _read_v1(f, path, read)
            _check_shapes(path, data, attrs)
        else:  # shapes hold by construction: one table row per sample / token, offsets from lengths
            data = _read_v2(f, path, read, attrs)
    for n, src in derive.items():
        data[n] = np.ascontiguousarray(data[src].reshape(len(data[src]), -1) if n == "reward_sources" else data[src])
        data[n] = data[n].astype(BY_NAME[n].dtype, copy=False)
    return {n: data[n] for n in names}, attrs


_DERIVE = {**DERIVED, "reward_sources": "reward"}  # field -> the field it is read from when not stored
_LEGACY = ("reward_sources", "scored")  # versions 1-2: the reward, as the one source LEGACY_SOURCE


def _read_v1(f: h5py.File, path: str, names: list[str]) -> dict[str, np.ndarray]:
    """Version 1: one dataset per field."""
    missing = [n for n in names if n not in f]
    if missing:
        raise bad(path, "partial", f"{f.attrs.get('kind')} shard misses field(s) {', '.join(missing)}")
    return {n: read_raw(f, n, BY_NAME[n].dtype) for n in names}


def _read_v2(f: h5py.File, path: str, names: list[str], attrs: dict) -> dict[str, np.ndarray]:
    """Versions 2 and 3: the tables `samples` and `response`, the array `prompt_tokens`, (3, scored)
    the table `reward_sources`; offsets derived."""
    if "reward_sources" in names:
        rest = _read_v2(f, path, [x for x in names if x != "reward_sources"], attrs)
        return {**rest, "reward_sources": _read_sources(f, path, attrs)}
    derived = {"prompt_offsets": ("prompt_len", "prompt_tokens"), "response_offsets": ("response_len", "response")}
    wanted = [x for x in names if x not in derived] + [derived[x][0] for x in names if x in derived]
    need = {dataset_of(x) for x in wanted} | {derived[x][1] for x in names if x in derived}
    raw = {d: read_raw(f, d) for d in DATASETS if d in need}
    missing = [x for x in BY_NAME if x in wanted and x not in _columns(raw[dataset_of(x)], dataset_of(x))]
    if missing:
        raise bad(path, "partial", f"{attrs['kind']} shard misses field(s) {', '.join(missing)}")
    col = {x: np.ascontiguousarray(_column(raw[dataset_of(x)], x), dtype=BY_NAME[x].dtype) for x in wanted}
    n = int(attrs["num_samples"])
    if "samples" in raw and len(raw["samples"]) != n:
        raise bad(path, "partial", f"dataset samples has {len(raw['samples'])} rows for num_samples={n}")
    for off in (x for x in names if x in derived):
        length, flat = derived[off]
        lens = col[length]
        if len(lens) and (lens.min() < 0 or int(lens.sum()) != len(raw[flat])):
            raise bad(path, "partial", f"{length} sums to {int(lens.sum())} but {flat} has {len(raw[flat])} rows")
        col[off] = _lengths_to_offsets(lens)
    return {x: col[x] for x in names}


def _read_sources(f: h5py.File, path: str, attrs: dict) -> np.ndarray:
    """The `reward_sources` table as an (N, S) float32 array, columns in the order of meta reward_sources."""
    if "reward_sources" not in f:
        raise bad(path, "partial", f"{attrs['kind']} shard misses field(s) reward_sources")
    t, names, n = read_raw(f, "reward_sources"), list(attrs.get("reward_sources") or []), int(attrs["num_samples"])
    if list(t.dtype.names or ()) != names or len(t) != n:
        raise bad(path, "partial", f"reward_sources has columns {t.dtype.names}, {len(t)} rows; meta: {names}, {n}")
    out = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = t[name]
    return out


def _columns(arr: np.ndarray, dataset: str) -> tuple[str, ...]:
    """Field names a dataset holds: a table's columns, or the plain array's own name."""
    return arr.dtype.names or (dataset,)


def _column(arr: np.ndarray, name: str) -> np.ndarray:
    """Column `name` of a table, or the plain array itself."""
    return arr if arr.dtype.names is None else arr[name]


def _check_shapes(path: str, data: dict[str, np.ndarray], attrs: dict) -> None:
    n = int(attrs.get("num_samples", -1))
    for name, arr in data.items():
        shape = BY_NAME[name].shape
        want = {"N": n, "N+1": n + 1}.get(shape)
        if want is not None and arr.shape != (want,):
            raise bad(path, "partial", f"field {name} has shape {arr.shape}, expected ({want},) for num_samples={n}")
    for off, flat in (("prompt_offsets", "prompt_tokens"), ("response_offsets", "response_tokens")):
        if off in data and flat in data and int(data[off][-1]) != len(data[flat]):
            raise bad(path, "partial", f"{off} end at {int(data[off][-1])} but {flat} has {len(data[flat])}")
    for p in ("gen_logprobs", "ref_logprobs"):
        if p in data and "response_tokens" in data and len(data[p]) != len(data["response_tokens"]):
            raise bad(path, "partial", f"{p} has {len(data[p])} values for {len(data['response_tokens'])} tokens")


def pack_ragged(seqs: list[np.ndarray], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list -> (flat array, int64 offsets of length len(seqs)+1)."""
    offsets = _lengths_to_offsets(np.array([len(s) for s in seqs], dtype=np.int64))
    flat = np.concatenate([np.asarray(s, dtype=dtype) for s in seqs]) if seqs else np.zeros(0, dtype=dtype)
    return flat, offsets


def sample_fields(prompts: list, samples, prompt_index, sample_index, seeds, version: int, step: int) -> dict:
    """The fields every shard of sampled responses holds (a generated or an eval shard, rollout/schema.py):
    identities, seeds, lengths, and the ragged prompt, response and log-prob arrays. `samples` has
    `responses`, `logprobs` and `eos` (models/generate.Samples)."""
    n = len(prompts)
    pt, po = pack_ragged(prompts, "int32")
    rt, ro = pack_ragged(samples.responses, "int32")
    lp, _ = pack_ragged(samples.logprobs, "float32")
    return {
        "prompt_index": prompt_index,
        "sample_index": sample_index,
        "policy_version": np.full(n, version, dtype=np.int64),
        "step": np.full(n, step, dtype=np.int64),
        "seed": seeds,
        "prompt_len": np.diff(po).astype(np.int32),
        "response_len": np.diff(ro).astype(np.int32),
        "eos": samples.eos,
        "prompt_offsets": po,
        "response_offsets": ro,
        "prompt_tokens": pt,
        "response_tokens": rt,
        "gen_logprobs": lp,
    }


def unpack_ragged(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def reusable(path: str, expect: dict) -> bool:
    """True when a complete, intact shard already sits at `path` with attributes equal to `expect`
    (a resumed run reuses it instead of regenerating the identical shard)."""
    if not os.path.exists(path):
        return False
    try:
        _, attrs = read_shard(path)
    except ShardError:
        return False
    return all(attrs.get(k) == v for k, v in expect.items())
