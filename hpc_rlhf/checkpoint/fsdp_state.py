"""A train rank's own shards for a sharded checkpoint, and loading any checkpoint into any layout.

    parts = RankParts(); parts.add_model("policy", policy); parts.add_optim("opt_policy", opt)
    write_rank_file(folder, rank, ranks, parts.parts, parts.shapes, parts.whole if rank == 0 else None)

    src = CheckpointTensors(folder)                               # checkpoint/rank_files.py
    load_model(policy, src, "policy", rank, ranks)               # into FSDP2 shards or a plain model
    load_optim(opt, skeleton["opt_policy"], src, rank, ranks)

RankParts takes the local part of every DTensor (`to_local()`: FSDP2's dim-0 shard, no copy) of a
model's state and of an AdamW state (the moments; the scalar `step` counters are plain tensors,
the same on every rank, and go to the lead's optim.safetensors). Nothing is gathered.

load_model / load_optim go one tensor at a time: a DTensor parameter (or moment) takes rows
rows(n, rank, ranks) of the checkpoint's tensor, which is the rank's own part, read alone, when the
checkpoint was written by as many ranks, and otherwise a slice of that one tensor rebuilt from its
parts or read from a full checkpoint's file; a plain parameter takes the full tensor. So a resume on
the same ranks reads each rank's own file, and a resharded one (N ranks -> M, a full checkpoint ->
FSDP, FSDP -> one unsharded rank) never holds more than one full tensor beyond the model.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from hpc_rlhf.checkpoint.rank_files import CheckpointTensors, rows
from hpc_rlhf.checkpoint.tensorfile import MARK, split_tensors


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters and persistent buffers by state-dict name (the Parameter objects
    themselves: an in-place copy loads them), tied weights once (the first name, as cpu_state)."""
    out, seen = {}, set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        out[name] = t
    return out


class RankParts:
    """What one train rank writes into its checkpoint file (checkpoint/rank_files.write_rank_file)."""

    def __init__(self) -> None:
        self.parts: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, list[int]] = {}
        self.whole: dict[str, torch.Tensor] = {}  # plain tensors every rank holds: rank 0 writes them

    def _add(self, name: str, t: torch.Tensor) -> None:
        if isinstance(t, DTensor):
            self.parts[name] = t.to_local().detach()
            self.shapes[name] = list(t.shape)
        else:
            self.whole[name] = t.detach()

    def add_model(self, prefix: str, model: torch.nn.Module) -> None:
        for name, t in model_tensors(model).items():
            self._add(f"{prefix}/{name}", t)

    def add_optim(self, key: str, opt: torch.optim.Optimizer) -> None:
        """The optimizer's DTensor state under the names split_tensors gives it in optim.json."""
        _, tensors = split_tensors(opt.state_dict(), key)
        for name, t in tensors.items():
            if isinstance(t, DTensor):
                self._add(name, t)


def _local_of(p: DTensor, local: torch.Tensor) -> DTensor:
    """`local` (this rank's rows) as a DTensor laid out like parameter `p`."""
    return DTensor.from_local(
        local.to(p.to_local().device), p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )


@torch.no_grad()
def load_model(model: torch.nn.Module, src: CheckpointTensors, prefix: str, rank: int, ranks: int) -> None:
    """Copy the checkpoint's `prefix/` tensors into `model` (FSDP2-sharded over `ranks` or plain), one
    tensor at a time. Raises KeyError naming a tensor the checkpoint lacks."""
    for name, t in model_tensors(model).items():
        key = f"{prefix}/{name}"
        if not src.has(key):
            raise KeyError(f"no tensor {key}")
        if isinstance(t, DTensor):
            t.to_local().copy_(src.part(key, rank, ranks))
        else:
            t.copy_(src.full(key))


def load_optim(opt: torch.optim.Optimizer, skeleton: dict, src: CheckpointTensors, rank: int, ranks: int) -> None:
    """Load an optimizer state whose skeleton (optim.json's entry, placeholders naming tensors) is
    `skeleton` into `opt` (its parameters sharded over `ranks` or plain), one tensor at a time."""
    params = [p for g in opt.param_groups for p in g["params"]]
    state = {}
    for i, entry in skeleton["state"].items():
        p = params[int(i)]
        st = {}
        for k, v in entry.items():
            if isinstance(v, dict) and set(v) == {MARK}:  # a placeholder: read the tensor it names
                name = v[MARK]
                if isinstance(p, DTensor) and p.dim() > 0 and src.shape(name) == list(p.shape):
                    v = _local_of(p, src.part(name, rank, ranks))
                else:
                    v = src.full(name)
            elif isinstance(v, torch.Tensor) and isinstance(p, DTensor) and p.dim() > 0 and v.shape == p.shape:
                v = _local_of(p, v[slice(*rows(v.shape[0], rank, ranks))].clone())  # 0.1.0's optim.pt
            st[k] = v
        state[i] = st
    opt.load_state_dict({"state": state, "param_groups": skeleton["param_groups"]})
