"""Write and read rollout shards (HDF5), crash-consistently.

    write_shard(path, data, attrs)      # tmp name -> close -> os.replace (durable=True: fsyncs too)
    data, attrs = read_shard(path)      # raises ShardError on a damaged, partial or foreign file
    sync_paths(paths)                   # fsync many files (and then their folders) at once

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

import os
import time
from typing import Optional

import h5py
import numpy as np

from hpc_rlhf.errors import ShardError
from hpc_rlhf.rollout.schema import BY_NAME, SCHEMA_VERSION, fields_for

# Measured with tools/bench/io_bench.py (docs/performance.md): gzip costs far more time than the
# bytes it saves on token/log-prob data, and lzf saves little on random-looking int32/float32.
COMPRESSION: Optional[str] = None
CHUNK_BYTES = 1 << 18  # 256 KiB chunks: a whole field of a usual shard is one chunk
TMP_MARK = ".tmp-"


def fsync_file(path: str) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_file


def sync_paths(paths: list[str]) -> None:
    """fsync every file of `paths`, then every folder holding one. The fsyncs run side by side
    (threads; fsync releases the GIL), so the filesystem can commit them together: on ext4 eight
    files take about the time of one."""
    from concurrent.futures import ThreadPoolExecutor

    if not paths:
        return
    dirs = sorted({os.path.dirname(p) or "." for p in paths})
    with ThreadPoolExecutor(min(16, len(paths))) as pool:
        list(pool.map(fsync_file, paths))
        list(pool.map(fsync_dir, dirs))


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
    """Write `data` (every field of attrs['kind']) to `path` atomically; `durable`: fsync the file and
    the rename before returning. Returns path."""
    arrays = normalize(data, attrs["kind"], f"shard {path}")
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}")
    with h5py.File(tmp, "w", locking=False) as f:
        for name, arr in arrays.items():
            _create(f, name, arr, compression)
        f.attrs.update({**attrs, "schema_version": SCHEMA_VERSION, "created_unix": time.time()})
    if durable:
        fsync_file(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_dir(d)
    return path


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
    ds = h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(arr.dtype), space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, arr)


def _read(f: h5py.File, name: str) -> np.ndarray:
    """Dataset `name` as an array of its schema dtype (checksums verified by HDF5 on the way)."""
    ds = h5py.h5d.open(f.id, name.encode())
    arr = np.empty(ds.shape, dtype=BY_NAME[name].dtype if name in BY_NAME else ds.dtype)
    if arr.size:
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, arr)
    return arr


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
            data = {n: _read(f, n) for n in names}
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
