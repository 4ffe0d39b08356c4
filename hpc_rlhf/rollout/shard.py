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
from hpc_rlhf.rollout.schema import BY_NAME, DATASETS, READABLE_VERSIONS, SCHEMA_VERSION, dataset_of, fields_for
from hpc_rlhf.rundir import fsync_dir, fsync_file, tmp_path

# Measured with tools/bench/io_bench.py (docs/performance.md): gzip costs far more time than the
# bytes it saves on token/log-prob data, and lzf saves little on random-looking int32/float32.
COMPRESSION: Optional[str] = None
CHUNK_BYTES = 1 << 18  # 256 KiB chunks: a whole field of a usual shard is one chunk


def normalize(data: dict[str, np.ndarray], kind: str, where: str = "shard") -> dict[str, np.ndarray]:
    """Every field of `kind` as the contiguous array of its schema dtype: exactly what a read of the
    shard returns (the single-rank loop hands these to the next role instead of re-reading the file)."""
    missing = [f.name for f in fields_for(kind) if f.name not in data]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    return {f.name: np.ascontiguousarray(data[f.name], dtype=f.dtype) for f in fields_for(kind)}


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
    meta = {**{k: _plain(v) for k, v in attrs.items()}, "schema_version": SCHEMA_VERSION, "created_unix": time.time()}
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = tmp_path(path)
    with h5py.File(h5py.h5f.create(tmp.encode(), h5py.h5f.ACC_TRUNC, fapl=_fapl())) as f:
        for name, names in _layout(kind):
            _create(f, name, arrays[name] if names is None else _table(arrays, names), compression)
        _set_attr(f, "schema_version", np.array(SCHEMA_VERSION, dtype=np.int64))
        _set_attr(f, "meta", np.array(json.dumps(meta, sort_keys=True).encode()))  # fixed-length ASCII
    if durable:
        fsync_file(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(d)
    return path


def _layout(kind: str) -> list[tuple[str, Optional[list[str]]]]:
    """Version-2 datasets of a shard of `kind`: (name, its table's columns; None for a plain array)."""
    cols: dict[str, list[str]] = {}
    for fl in fields_for(kind):
        if dataset_of(fl.name):
            cols.setdefault(dataset_of(fl.name), []).append(fl.name)
    return [(n, None if n == "prompt_tokens" else cols[n]) for n in DATASETS]


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


_FAPL: list[h5py.h5p.PropFAID] = []


def _fapl() -> h5py.h5p.PropFAID:
    """File access properties, built once: no file locking, close everything with the file. Opening
    through the low-level API with them skips h5py's per-file property building (0.2 ms of a shard
    write inside a run, where the caches are cold after the model's compute)."""
    if not _FAPL:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
        fapl.set_file_locking(False, True)
        _FAPL.append(fapl)
    return _FAPL[0]


_TYPES: dict[np.dtype, h5py.h5t.TypeID] = {}  # HDF5 types of the shard dtypes, built once (~40 us a table)


def _h5type(dtype: np.dtype) -> h5py.h5t.TypeID:
    if dtype not in _TYPES:
        _TYPES[dtype] = h5py.h5t.py_create(dtype)
    return _TYPES[dtype]


def _set_attr(f: h5py.File, name: str, value: np.ndarray) -> None:
    """A scalar attribute through the low-level API (half the high-level call's time)."""
    tid = _h5type(value.dtype) if value.dtype.kind != "S" else h5py.h5t.py_create(value.dtype)
    h5py.h5a.create(f.id, name.encode(), tid, h5py.h5s.create(h5py.h5s.SCALAR)).write(value)


def _get_attr(f: h5py.File, name: str):
    """A scalar attribute through the low-level API (KeyError when absent)."""
    a = h5py.h5a.open(f.id, name.encode())
    out = np.empty((), dtype=a.dtype)
    a.read(out)
    return out[()]


def _create(f: h5py.File, name: str, arr: np.ndarray, compression: Optional[str]) -> None:
    """A 1-D dataset: cut into equal chunks of CHUNK_BYTES at most, fletcher32-checksummed, optionally compressed;
    an empty one contiguous. Through h5py's low-level API: a third of the high-level call's time on
    the KB-sized arrays of a shard (tools/bench/io_bench.py)."""
    if arr.size == 0:
        f.create_dataset(name, data=arr)
        return
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    pieces = -(-arr.nbytes // CHUNK_BYTES)  # equal chunks: no mostly-empty last chunk on disk
    dcpl.set_chunk((-(-len(arr) // pieces),))
    if compression == "gzip":  # as h5py's compression="gzip" / "lzf"
        dcpl.set_deflate(4)
    elif compression == "lzf":
        dcpl.set_filter(h5py.h5z.FILTER_LZF, h5py.h5z.FLAG_OPTIONAL)
    elif compression is not None:
        raise ValueError(f"shard compression {compression!r}: use None, 'lzf' or 'gzip'")
    dcpl.set_fletcher32()
    space = h5py.h5s.create_simple(arr.shape)
    ds = h5py.h5d.create(f.id, name.encode(), _h5type(arr.dtype), space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, arr)


def _read_raw(f: h5py.File, name: str, dtype=None) -> np.ndarray:
    """Dataset `name` whole (as `dtype`, default its own), checksums verified by HDF5 on the way;
    ShardError(damaged) when it cannot be read."""
    try:
        ds = h5py.h5d.open(f.id, name.encode())
        arr = np.empty(ds.shape, dtype=dtype or ds.dtype)
        if arr.size:
            ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        if name not in f:
            raise _bad(f.filename, "partial", f"dataset {name} missing") from None
        raise _bad(f.filename, "damaged", f"dataset {name} unreadable ({first_line(e)})") from None
    return arr


NOT_A_SHARD = "no schema_version attribute: not a rollout shard"
_HINT = {
    "damaged": "it is skipped; delete it so a resumed run regenerates it",
    "partial": "it is skipped; delete it so a resumed run regenerates it",
    "foreign": "it is not a rollout shard this version reads; move it out of the archive or upgrade hpc-rlhf",
}


def _bad(path: str, status: str, reason: str) -> ShardError:
    return ShardError(f"shard '{path}' is {status}: {reason}; {_HINT[status]}", status, reason)


def _meta(f: h5py.File, path: str) -> dict:
    """The shard's metadata (`schema_version` plus the keys of ATTRS), whatever its version. From
    version 2 on, `meta` repeats schema_version, so a reader opens one attribute, not two."""
    try:
        try:
            attrs = json.loads(_get_attr(f, "meta"))
        except KeyError:  # version 1, or not a shard
            try:
                attrs = {"schema_version": int(_get_attr(f, "schema_version"))}
            except KeyError:
                raise _bad(path, "foreign", NOT_A_SHARD) from None
        ver = attrs.get("schema_version")
        if ver not in READABLE_VERSIONS:
            raise _bad(path, "foreign", f"schema version {ver}, this reader knows {list(READABLE_VERSIONS)}")
        if ver == 1:
            attrs = dict(f.attrs)
    except ShardError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise _bad(path, "damaged", f"attributes unreadable ({first_line(e)})") from None
    if str(attrs.get("kind")) not in ("generated", "scored"):
        raise _bad(path, "partial", f"attribute kind={attrs.get('kind')!r}, expected 'generated' or 'scored'")
    if "num_samples" not in attrs:
        raise _bad(path, "partial", "attribute num_samples missing")
    return attrs


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(h5py.h5f.open(path.encode(), h5py.h5f.ACC_RDONLY, fapl=_fapl()))
    except (OSError, ValueError) as e:
        if not os.path.exists(path):
            raise ShardError(f"shard '{path}' does not exist", "damaged", "does not exist") from None
        raise _bad(path, "damaged", f"not a readable HDF5 file ({first_line(e)})") from None


def read_attrs(path: str) -> dict:
    """The shard's metadata without reading its data. Raises ShardError."""
    with _open(path) as f:
        return _meta(f, path)


def read_shard(path: str, fields: Optional[list[str]] = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read (and checksum) a shard of any readable version: (every field of its kind, or `fields`, as
    contiguous arrays of the schema dtypes; metadata). Raises ShardError when damaged or partial."""
    with _open(path) as f:
        attrs = _meta(f, path)
        kind = str(attrs["kind"])
        names = list(fields) if fields is not None else [fl.name for fl in fields_for(kind)]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown shard fields {unknown}")
        if int(attrs["schema_version"]) == 1:
            data = _read_v1(f, path, names)
            _check_shapes(path, data, attrs)
        else:  # shapes hold by construction: one table row per sample / token, offsets from lengths
            data = _read_v2(f, path, names, attrs)
    return data, attrs


def _read_v1(f: h5py.File, path: str, names: list[str]) -> dict[str, np.ndarray]:
    """Version 1: one dataset per field."""
    missing = [n for n in names if n not in f]
    if missing:
        raise _bad(path, "partial", f"{f.attrs.get('kind')} shard misses field(s) {', '.join(missing)}")
    return {n: _read_raw(f, n, BY_NAME[n].dtype) for n in names}


def _read_v2(f: h5py.File, path: str, names: list[str], attrs: dict) -> dict[str, np.ndarray]:
    """Version 2: the tables `samples` and `response`, the array `prompt_tokens`; offsets derived."""
    derived = {"prompt_offsets": ("prompt_len", "prompt_tokens"), "response_offsets": ("response_len", "response")}
    wanted = [x for x in names if x not in derived] + [derived[x][0] for x in names if x in derived]
    need = {dataset_of(x) for x in wanted} | {derived[x][1] for x in names if x in derived}
    raw = {d: _read_raw(f, d) for d in DATASETS if d in need}
    missing = [x for x in BY_NAME if x in wanted and x not in _columns(raw[dataset_of(x)], dataset_of(x))]
    if missing:
        raise _bad(path, "partial", f"{attrs['kind']} shard misses field(s) {', '.join(missing)}")
    col = {x: np.ascontiguousarray(_column(raw[dataset_of(x)], x), dtype=BY_NAME[x].dtype) for x in wanted}
    n = int(attrs["num_samples"])
    if "samples" in raw and len(raw["samples"]) != n:
        raise _bad(path, "partial", f"dataset samples has {len(raw['samples'])} rows for num_samples={n}")
    for off in (x for x in names if x in derived):
        length, flat = derived[off]
        lens = col[length]
        if len(lens) and (lens.min() < 0 or int(lens.sum()) != len(raw[flat])):
            raise _bad(path, "partial", f"{length} sums to {int(lens.sum())} but {flat} has {len(raw[flat])} rows")
        col[off] = _lengths_to_offsets(lens)
    return {x: col[x] for x in names}


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
            raise _bad(path, "partial", f"field {name} has shape {arr.shape}, expected ({want},) for num_samples={n}")
    for off, flat in (("prompt_offsets", "prompt_tokens"), ("response_offsets", "response_tokens")):
        if off in data and flat in data and int(data[off][-1]) != len(data[flat]):
            raise _bad(path, "partial", f"{off} end at {int(data[off][-1])} but {flat} has {len(data[flat])}")
    for p in ("gen_logprobs", "ref_logprobs"):
        if p in data and "response_tokens" in data and len(data[p]) != len(data["response_tokens"]):
            raise _bad(path, "partial", f"{p} has {len(data[p])} values for {len(data['response_tokens'])} tokens")


def pack_ragged(seqs: list[np.ndarray], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list -> (flat array, int64 offsets of length len(seqs)+1)."""
    offsets = _lengths_to_offsets(np.array([len(s) for s in seqs], dtype=np.int64))
    flat = np.concatenate([np.asarray(s, dtype=dtype) for s in seqs]) if seqs else np.zeros(0, dtype=dtype)
    return flat, offsets


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
