"""Low-level HDF5 I/O of rollout shards (h5py's low-level API: a third of the high-level calls' time
on the KB-sized arrays of a shard, tools/bench/io_bench.py). shard.py is the only user.

    f = h5py.File(h5py.h5f.create(path, h5py.h5f.ACC_TRUNC, fapl=fapl()))
    create(f, "samples", table, compression=None); set_attr(f, "meta", value)
    arr = read_raw(f, "samples")      # ShardError (bad(...)) when missing or unreadable
"""

from __future__ import annotations

from typing import Optional

import h5py
import numpy as np

from hpc_rlhf.errors import ShardError, first_line

CHUNK_BYTES = 1 << 18  # 256 KiB chunks: a whole field of a usual shard is one chunk

_FAPL: list[h5py.h5p.PropFAID] = []


def fapl() -> h5py.h5p.PropFAID:
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


def set_attr(f: h5py.File, name: str, value: np.ndarray) -> None:
    """A scalar attribute through the low-level API (half the high-level call's time)."""
    tid = _h5type(value.dtype) if value.dtype.kind != "S" else h5py.h5t.py_create(value.dtype)
    h5py.h5a.create(f.id, name.encode(), tid, h5py.h5s.create(h5py.h5s.SCALAR)).write(value)


def get_attr(f: h5py.File, name: str):
    """A scalar attribute through the low-level API (KeyError when absent)."""
    a = h5py.h5a.open(f.id, name.encode())
    out = np.empty((), dtype=a.dtype)
    a.read(out)
    return out[()]


def create(f: h5py.File, name: str, arr: np.ndarray, compression: Optional[str]) -> None:
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


def read_raw(f: h5py.File, name: str, dtype=None) -> np.ndarray:
    """Dataset `name` whole (as `dtype`, default its own), checksums verified by HDF5 on the way;
    ShardError(damaged) when it cannot be read."""
    try:
        ds = h5py.h5d.open(f.id, name.encode())
        arr = np.empty(ds.shape, dtype=dtype or ds.dtype)
        if arr.size:
            ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        if name not in f:
            raise bad(f.filename, "partial", f"dataset {name} missing") from None
        raise bad(f.filename, "damaged", f"dataset {name} unreadable ({first_line(e)})") from None
    return arr


_HINT = {
    "damaged": "it is skipped; delete it so a resumed run regenerates it",
    "partial": "it is skipped; delete it so a resumed run regenerates it",
    "foreign": "it is not a rollout shard this version reads; move it out of the archive or upgrade hpc-rlhf",
}


def bad(path: str, status: str, reason: str) -> ShardError:
    return ShardError(f"shard '{path}' is {status}: {reason}; {_HINT[status]}", status, reason)
