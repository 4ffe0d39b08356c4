"""safetensors files written straight from the tensors' memory, hashed while they are written.

    sha256, size = write_tensors(path, {"name": tensor, ...})   # no fsync: the caller syncs
    size = write_tensor_stream(path, {"name": (dtype, shape)}, fetch)  # fetch(name) -> tensor, one at a time
    skeleton, tensors = split_tensors(obj)                       # nested state -> (plain data, tensors)
    obj = join_tensors(skeleton, tensors)

`write_tensors` writes the safetensors format (8-byte header length, JSON header, raw little-endian
data; https://huggingface.co/docs/safetensors) from each tensor's own buffer, with no serialised copy
of the whole file in memory (`safetensors.torch.save_file` makes one), while a second thread
computes the file's sha256 from the same buffers (hashlib releases the GIL), so the checkpoint
manifest needs no second read of the file. `write_tensor_stream` writes the same bytes from tensors
it asks for one at a time (the weight publisher: a gathered parameter is written and dropped). Tensors are laid out by element size, largest first, as
the reference writer does, so every tensor starts at an offset aligned to its element size. Files
are read back with `safetensors.torch.load_file`, or into existing tensors with `read_into` (the
generators' published weights: no second copy of the policy).

`split_tensors` turns an optimizer/scheduler state (dicts, lists, tuples holding tensors) into a
small plain-data skeleton with named placeholders (written as JSON by checkpoint/exact_json.py)
plus a flat {name: tensor} dict for write_tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from collections.abc import Callable
from typing import Any, Optional

import torch

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPE_OF = {v: k for k, v in DTYPES.items()}
MARK = "__tensor__"


def _raw(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy when it is a contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8)
    return memoryview(t.numpy())


def write_tensors(
    path: str, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None
) -> tuple[str, int]:
    """Write `tensors` to `path` as safetensors. Returns (sha256 hex digest, size in bytes)."""
    for name, t in tensors.items():
        if t.dtype not in DTYPES:
            raise TypeError(f"tensor {name}: dtype {t.dtype} has no safetensors code here")
    head, names = file_header({n: (t.dtype, list(t.shape)) for n, t in tensors.items()}, metadata)
    views = [_raw(tensors[n]) if tensors[n].numel() else memoryview(b"") for n in names]
    digest = hashlib.sha256(head)
    hasher = threading.Thread(target=lambda: [digest.update(v) for v in views], daemon=True)
    hasher.start()
    try:
        with open(path, "wb") as f:
            f.write(head)
            for v in views:
                f.write(v)
    finally:
        hasher.join()
    return digest.hexdigest(), len(head) + sum(len(v) for v in views)


def write_tensor_stream(
    path: str,
    specs: dict[str, tuple[torch.dtype, list[int]]],
    fetch: Callable[[str], torch.Tensor],
    metadata: Optional[dict[str, str]] = None,
) -> int:
    """Write the tensors `specs` names ({name: (dtype, shape)}) to `path`, asking fetch(name) for each in
    file order and dropping it once written: one tensor in memory at a time, the same bytes write_tensors
    writes for them. Returns the size in bytes (no hash: the caller needs none)."""
    head, names = file_header(specs, metadata)
    size = len(head)
    with open(path, "wb") as f:
        f.write(head)
        for name in names:
            t = fetch(name)
            if t.dtype != specs[name][0] or list(t.shape) != list(specs[name][1]):
                raise ValueError(f"tensor {name}: got {t.dtype} {list(t.shape)}, the header says {specs[name]}")
            if t.numel():
                size += f.write(_raw(t))
            del t
    return size


def file_order(specs: dict[str, tuple[torch.dtype, list[int]]]) -> list[str]:
    """The order tensors are laid out in a file: by element size, largest first, then by name (as the
    reference writer does), so that every tensor starts at an offset aligned to its element size."""
    return sorted(specs, key=lambda n: (-specs[n][0].itemsize, n))


def file_header(
    specs: dict[str, tuple[torch.dtype, list[int]]], metadata: Optional[dict[str, str]] = None
) -> tuple[bytes, list[str]]:
    """The header of a safetensors file holding `specs` ({name: (dtype, shape)}), and the names in the
    file's order. `__metadata__` comes first, as `safetensors.torch.save_file` (and so save_pretrained)
    writes it: a file of the same tensors and metadata is byte-identical to theirs."""
    names = file_order(specs)
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    off = 0
    for name in names:
        dtype, shape = specs[name]
        if dtype not in DTYPES:
            raise TypeError(f"tensor {name}: dtype {dtype} has no safetensors code here")
        n = dtype.itemsize * math.prod(shape)
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb, names


def read_into(path: str, targets: dict[str, torch.Tensor]) -> list[str]:
    """Copy each tensor of the safetensors file `path` into targets[name] (cast to that tensor's dtype, onto
    its device) with plain reads, one tensor at a time: straight into the target's memory when it is a
    contiguous CPU tensor of the file's dtype, else through one tensor-sized buffer. Neither the whole file
    nor a memory map of it is held (a map's pages would count in the reader's resident memory). Names in
    the file but not in `targets` are skipped; returns the file's names."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for name, h in header.items():
            dst = targets.get(name)
            if dst is None:
                continue
            dtype, (start, end) = _DTYPE_OF[h["dtype"]], h["data_offsets"]
            dst = dst.detach()
            direct = dst.device.type == "cpu" and dst.dtype == dtype and dst.is_contiguous()
            direct = direct and list(dst.shape) == h["shape"]
            buf = dst if direct else torch.empty(h["shape"], dtype=dtype)
            f.seek(8 + n + start)
            if end > start and f.readinto(memoryview(buf.reshape(-1).view(torch.uint8).numpy())) != end - start:
                raise ValueError(f"{path}: tensor {name} is cut short (a truncated file)")
            if not direct:
                dst.copy_(buf)
    return list(header)


def split_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Nested dicts/lists/tuples -> (the same structure with each tensor replaced by {MARK: name},
    {name: tensor}). Names are the '/'-joined keys and indices leading to the tensor."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return {MARK: path}
        if isinstance(x, dict):
            return {k: walk(v, f"{path}/{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            out = [walk(v, f"{path}/{i}" if path else str(i)) for i, v in enumerate(x)]
            return tuple(out) if isinstance(x, tuple) else out
        return x

    return walk(obj, prefix), tensors


def join_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of split_tensors. Raises KeyError naming a placeholder with no tensor."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {MARK}:
            return tensors[skeleton[MARK]]
        return {k: join_tensors(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        out = [join_tensors(v, tensors) for v in skeleton]
        return tuple(out) if isinstance(skeleton, tuple) else out
    return skeleton
