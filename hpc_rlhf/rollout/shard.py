"""Write and read rollout shards (HDF5), crash-consistently.

    write_shard(path, data, attrs)      # tmp name -> flush -> fsync -> os.replace -> fsync dir
    data, attrs = read_shard(path)      # raises ShardError on a damaged, partial or foreign file

Readers only ever see complete files: a shard exists under its final name only after the rename.
HDF5 file locking is off (`locking=False`): shards are written once under a private temporary
name, so no lock is needed, and flock is unreliable on Lustre and NFS.
"""

from __future__ import annotations

import os
import time
from typing import Optional

import h5py
import numpy as np

from hpc_rlhf.errors import ShardError
from hpc_rlhf.rollout.schema import BY_NAME, SCHEMA_VERSION, fields_for

# Measured with tools/bench/shard_io.py (docs/performance.md): gzip costs far more time than the
# bytes it saves on token/log-prob data, and lzf saves little on random-looking int32/float32.
COMPRESSION: Optional[str] = None
TMP_MARK = ".tmp-"


def fsync_file(path: str) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_file


def write_shard(path: str, data: dict[str, np.ndarray], attrs: dict, compression: Optional[str] = COMPRESSION) -> str:
    """Write `data` (every field of attrs['kind']) to `path` atomically. Returns path."""
    kind = attrs["kind"]
    missing = [f.name for f in fields_for(kind) if f.name not in data]
    if missing:
        raise ValueError(f"shard {path}: missing fields {missing}")
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}")
    with h5py.File(tmp, "w", locking=False) as f:
        for fld in fields_for(kind):
            arr = np.ascontiguousarray(data[fld.name], dtype=fld.dtype)
            if arr.size == 0:
                f.create_dataset(fld.name, data=arr)
            else:
                f.create_dataset(fld.name, data=arr, chunks=True, fletcher32=True, compression=compression)
        f.attrs.update({**attrs, "schema_version": SCHEMA_VERSION, "created_unix": time.time()})
        f.flush()
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(d)
    return path


def read_attrs(path: str) -> dict:
    try:
        with h5py.File(path, "r", locking=False) as f:
            return dict(f.attrs)
    except (OSError, KeyError) as e:
        raise ShardError(f"shard '{path}' is not a readable HDF5 file ({e}); delete it so it is regenerated") from None


def read_shard(path: str, fields: Optional[list[str]] = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read (and checksum) a shard. `fields` limits what is read. Raises ShardError when damaged."""
    if not os.path.exists(path):
        raise ShardError(f"shard '{path}' does not exist")
    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = dict(f.attrs)
            ver = attrs.get("schema_version")
            if ver != SCHEMA_VERSION:
                raise ShardError(f"shard '{path}' has schema version {ver}, this reader knows {SCHEMA_VERSION}")
            kind = str(attrs.get("kind"))
            names = fields or [fl.name for fl in fields_for(kind)]
            data = {n: f[n][()] for n in names}
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise ShardError(
            f"shard '{path}' is damaged ({str(e).splitlines()[0]}); it is skipped; delete it to regenerate"
        ) from None
    _check_shapes(path, data, attrs)
    return data, attrs


def _check_shapes(path: str, data: dict[str, np.ndarray], attrs: dict) -> None:
    n = int(attrs.get("num_samples", -1))
    for name, arr in data.items():
        shape = BY_NAME[name].shape
        want = {"N": n, "N+1": n + 1}.get(shape)
        if want is not None and arr.shape != (want,):
            raise ShardError(f"shard '{path}': field {name} has shape {arr.shape}, expected ({want},)")
    for off, flat in (("prompt_offsets", "prompt_tokens"), ("response_offsets", "response_tokens")):
        if off in data and flat in data and int(data[off][-1]) != len(data[flat]):
            raise ShardError(f"shard '{path}': {off} ends at {int(data[off][-1])} but {flat} has {len(data[flat])}")


def pack_ragged(seqs: list[np.ndarray], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list -> (flat array, int64 offsets of length len(seqs)+1)."""
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
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
