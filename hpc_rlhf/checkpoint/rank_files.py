"""Per-rank checkpoint files of train.sharding=fsdp, and reading any checkpoint one tensor at a time.

    write_rank_file(folder, rank, ranks, {name: local_part}, {name: global_shape})  # -> (sha256, size)
    src = CheckpointTensors(folder)          # a sharded or a full (unsharded) checkpoint alike
    src.full("policy/model.embed_tokens.weight")           # one full tensor, rebuilt from the parts
    src.part("value/score.weight", rank=1, ranks=2)        # that rank's rows under another layout

Each train rank writes `train_rankRRR_of_NNN.safetensors` (rundir.rank_state_name) with the local
parts of its DTensors: policy parameters as `policy/<name>`, value parameters as `value/<name>`, the
AdamW moments under the names checkpoint/tensorfile.split_tensors gives them in optim.json
(`opt_policy/state/<i>/exp_avg`, ...). The file's safetensors metadata holds `rank`, `ranks` and,
per tensor, its global shape and the offset of this part along dim 0. FSDP2 shards dim 0 with
torch.chunk semantics: rank r holds rows [min(r*c, n), min((r+1)*c, n)) with c = ceil(n / ranks),
so the last ranks may hold fewer rows, or none (`rows`).

A full checkpoint (train.sharding=none, or one train rank) keeps its files (policy.safetensors,
value.safetensors, optim.safetensors); CheckpointTensors serves both from the same names, reading one
tensor at a time (safetensors' safe_open), never a whole file, so a resharded resume holds at most
one full tensor beyond the model's own shards.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Optional

import torch
from safetensors import safe_open

from hpc_rlhf.checkpoint.store import describe_failure, make_staging_folder, staging_folder
from hpc_rlhf.checkpoint.tensorfile import write_tensors
from hpc_rlhf.errors import CheckpointError, first_line
from hpc_rlhf.rundir import CKPT_OPTIM, CKPT_POLICY, CKPT_VALUE, parse_rank_state_name, rank_state_name, sync_paths

FORMAT = "hpc_rlhf.rank_state/1"
MODEL_FILES = {"policy": CKPT_POLICY, "value": CKPT_VALUE}  # prefix -> file of a full checkpoint


def rows(n: int, rank: int, ranks: int) -> tuple[int, int]:
    """[start, stop) of the dim-0 rows `rank` of `ranks` holds (torch.chunk semantics, as FSDP2)."""
    c = -(-n // ranks)
    return min(rank * c, n), min((rank + 1) * c, n)


def write_rank_file(
    folder: str,
    rank: int,
    ranks: int,
    parts: dict[str, torch.Tensor],
    shapes: dict[str, list[int]],
    whole: Optional[dict[str, torch.Tensor]] = None,
) -> tuple[str, int]:
    """Write rank `rank`'s parts (local dim-0 slices of tensors whose global shapes are `shapes`) and
    `whole`, tensors every rank holds in full (rank 0 passes them), into `folder` (no fsync: the
    caller syncs). Returns (sha256, size) of the file."""
    layout = {}
    for name, t in parts.items():
        shape = list(shapes[name])
        start, stop = rows(shape[0], rank, ranks)
        if t.shape[0] != stop - start or list(t.shape[1:]) != shape[1:]:
            raise ValueError(f"{name}: rank {rank} of {ranks} holds {list(t.shape)}, expected rows {start}:{stop}")
        layout[name] = {"shape": shape, "offset": start}
    for name, t in (whole or {}).items():
        layout[name] = {"shape": list(t.shape), "offset": 0, "whole": True}
    meta = {"format": FORMAT, "rank": str(rank), "ranks": str(ranks), "layout": json.dumps(layout)}
    path = os.path.join(folder, rank_state_name(rank, ranks))
    return write_tensors(path, {**parts, **(whole or {})}, meta)


def write_rank_state(
    run_dir: str,
    step: int,
    rank: int,
    ranks: int,
    write: Callable[[str], tuple[str, int]],
    gather: Callable[[bytes], list[bytes]],
) -> dict[str, tuple[str, int]]:
    """Collective of the train ranks, before the lead commits the checkpoint of `step`: rank 0 makes
    its staging folder (checkpoint/store.py), every rank calls write(folder) (write_rank_file) and
    fsyncs its file; gather(bytes) -> every rank's bytes (DataParallel.all_gather_bytes). Returns
    {file name: (sha256, size)} of every rank's file, for the lead's save_checkpoint(staged=...).
    Raises CheckpointError on every rank when any rank failed (the folder is removed)."""

    def failed(e: BaseException, where: str) -> bytes:
        return ("!" + (describe_failure(e, where) or f"{type(e).__name__}: {first_line(e)}")).encode()

    msg = b""
    if rank == 0:
        try:
            msg = str(os.getpid()).encode() + b" " + make_staging_folder(run_dir, step).encode()
        except OSError as e:
            msg = failed(e, run_dir)
    head = gather(msg)[0].decode()
    if head.startswith("!"):
        raise CheckpointError(f"checkpoint of step {step} failed: {head[1:]}; the previous checkpoint is intact")
    folder = staging_folder(run_dir, step, int(head.split(" ", 1)[0]))
    bug = None
    try:
        sha, size = write(folder)
        sync_paths([os.path.join(folder, rank_state_name(rank, ranks))])
        msg = f"{sha} {size}".encode()
    except Exception as e:
        bug = e if describe_failure(e, folder) is None else None
        msg = failed(e, folder)
    results = [m.decode() for m in gather(msg)]
    if bug is not None:
        raise bug
    bad = [(r, m[1:]) for r, m in enumerate(results) if m.startswith("!")]
    if bad:
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        r, cause = bad[0]
        raise CheckpointError(
            f"checkpoint of step {step}: train rank {r} could not write {rank_state_name(r, ranks)}: {cause}; "
            "nothing of it was kept and the previous checkpoint is intact"
        )
    out = {}
    for r, m in enumerate(results):
        sha, size = m.split()
        out[rank_state_name(r, ranks)] = (sha, int(size))
    return out


def rank_files(folder: str) -> Optional[int]:
    """The number of train ranks whose files make up the checkpoint `folder`, None for a full one.
    Raises CheckpointError naming a missing rank file."""
    found = [r for r in (parse_rank_state_name(n) for n in os.listdir(folder)) if r is not None]
    if not found:
        return None
    ranks = found[0][1]
    for r in range(ranks):
        if (r, ranks) not in found:
            raise CheckpointError(
                f"checkpoint '{folder}': shard file {rank_state_name(r, ranks)} is missing; "
                "use an older checkpoint (remove this folder)"
            )
    return ranks


class CheckpointTensors:
    """The tensors of a checkpoint folder by name, whichever layout wrote them, one at a time."""

    def __init__(self, folder: str):
        self.folder = folder
        self.ranks = rank_files(folder)
        self._open: dict[str, object] = {}
        self._layout: list[dict] = []
        if self.ranks is not None:
            for r in range(self.ranks):
                meta = self._file(rank_state_name(r, self.ranks)).metadata() or {}
                if meta.get("format") != FORMAT or int(meta.get("ranks", -1)) != self.ranks:
                    raise CheckpointError(f"checkpoint file '{self._path(r)}' is not a train rank file of {FORMAT}")
                self._layout.append(json.loads(meta["layout"]))

    @property
    def sharded(self) -> bool:
        return self.ranks is not None

    def _path(self, rank: int) -> str:
        return os.path.join(self.folder, rank_state_name(rank, self.ranks or 1))

    def _file(self, name: str):
        if name not in self._open:
            path = os.path.join(self.folder, name)
            try:
                self._open[name] = safe_open(path, framework="pt")
            except (OSError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"checkpoint file '{path}' cannot be read ({e})") from None
        return self._open[name]

    def _full_file(self, name: str) -> tuple[str, str]:
        prefix, _, key = name.partition("/")
        if prefix in MODEL_FILES:
            return MODEL_FILES[prefix], key
        return CKPT_OPTIM, name

    def _get(self, fname: str, key: str) -> torch.Tensor:
        f = self._file(fname)
        if key not in f.keys():
            raise CheckpointError(f"checkpoint file '{os.path.join(self.folder, fname)}' has no tensor {key}")
        return f.get_tensor(key)

    def is_part(self, name: str) -> bool:
        """Whether `name` is stored in the rank files (as parts, or whole in rank 0's)."""
        return self.sharded and name in self._layout[0]

    def _whole(self, name: str) -> bool:
        return bool(self._layout[0][name].get("whole"))

    def has(self, name: str) -> bool:
        if self.is_part(name):
            return True
        fname, key = self._full_file(name)
        return os.path.exists(os.path.join(self.folder, fname)) and key in self._file(fname).keys()

    def shape(self, name: str) -> list[int]:
        """The global shape of tensor `name`, without reading it."""
        if self.is_part(name):
            return list(self._layout[0][name]["shape"])
        fname, key = self._full_file(name)
        if key not in self._file(fname).keys():
            raise CheckpointError(f"checkpoint file '{os.path.join(self.folder, fname)}' has no tensor {key}")
        return list(self._file(fname).get_slice(key).get_shape())

    def full(self, name: str) -> torch.Tensor:
        """The whole tensor `name`: read from its full file, or its parts concatenated in rank order."""
        if not self.is_part(name):
            return self._get(*self._full_file(name))
        if self._whole(name):
            return self._get(rank_state_name(0, self.ranks), name)
        parts = [self._get(rank_state_name(r, self.ranks), name) for r in range(self.ranks)]
        shape = self._layout[0][name]["shape"]
        out = torch.cat(parts)
        if list(out.shape) != shape:
            raise CheckpointError(
                f"checkpoint '{self.folder}': the parts of {name} make {list(out.shape)}, not {shape}"
            )
        return out

    def part(self, name: str, rank: int, ranks: int) -> torch.Tensor:
        """Rows rows(n, rank, ranks) of tensor `name`: the rank's own part, read alone, when the
        checkpoint was written by `ranks` ranks; else sliced from the full tensor (copied)."""
        if self.is_part(name) and self.ranks == ranks and not self._whole(name):
            return self._get(rank_state_name(rank, ranks), name)
        full = self.full(name)
        start, stop = rows(full.shape[0], rank, ranks)
        return full[start:stop].clone()

    def names(self, prefix: str) -> list[str]:
        """Names of the tensors under `prefix/` (a model's parameters)."""
        if self.sharded and prefix in MODEL_FILES:
            return [n for n in self._layout[0] if n.startswith(prefix + "/")]
        fname, _ = self._full_file(prefix + "/")
        return [f"{prefix}/{k}" for k in self._file(fname).keys()]
