"""Policy weights published by the trainer to the generators, as safetensors files + an MPI notice.

    path = publish(run_dir, version, policy.state_dict())   # atomic: tmp, rename
    load_into(policy, path)

A published file only has to be complete when a generator opens it (the rename sees to that), not
durable: versions are rebuilt from the checkpoint on resume, so nothing is fsynced here.

Files live at RUN_DIR/weights/policy_vXXXXXX.safetensors; versions no generator can still need
(older than current - max_policy_lag - 1) are pruned by the publisher.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file

from hpc_rlhf.checkpoint.tensorfile import write_tensors
from hpc_rlhf.models import lora
from hpc_rlhf.rundir import RunDir, parse_weights_name, tmp_path


def weights_path(run_dir: str, version: int) -> str:
    return RunDir(run_dir).weights(version)


def cpu_state(model: torch.nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The model's tensors, detached, on the CPU, tied weights stored once; copy=False: the model's own
    CPU tensors where they already are (valid until the model changes). A policy with LoRA adapters:
    the adapters alone (copies) and its base's hash (models/lora.py): what is published and checkpointed."""
    if lora.is_lora(model):
        return lora.adapter_state(model)
    seen: dict[int, str] = {}
    out = {}
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen:
            continue
        seen[v.data_ptr()] = k
        out[k] = v.detach().to("cpu", copy=copy).contiguous()
    return out


def save_tensors(path: str, tensors: dict[str, torch.Tensor]) -> tuple[str, int]:
    """Write a safetensors file under a temporary name and rename it into place (no fsync: the
    caller syncs what must be durable). Returns (sha256, size) of the file."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = tmp_path(path)
    digest = write_tensors(tmp, tensors)
    os.replace(tmp, path)
    return digest


def publish(run_dir: str, version: int, tensors: dict[str, torch.Tensor]) -> str:
    path = weights_path(run_dir, version)
    save_tensors(path, tensors)
    return path


def load_into(model: torch.nn.Module, path: str) -> None:
    load_state(model, load_file(path, device=str(next(model.parameters()).device)), f"weights '{path}'")


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` (a cpu_state of the same architecture; tied weights stored once) into `model`,
    cast to the model's dtype: under train.precision=bf16 a generator's bf16 policy takes the trainer's
    fp32 weights (load_state_dict's copy casts; no fp32 copy of the model is kept)."""
    if lora.is_lora(model):  # adapters only, onto the same base (models/lora.py)
        return lora.load_adapters(model, state, what)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k or "wte" in k or "embed" in k}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"{what} do not fit the policy: missing {missing}, unexpected {unexpected}")


def prune(run_dir: str, keep_from: int) -> None:
    d = RunDir(run_dir).weights_dir
    if not os.path.isdir(d):
        return
    for name in os.listdir(d):
        v = parse_weights_name(name)
        if v is not None and v < keep_from:
            os.unlink(os.path.join(d, name))
