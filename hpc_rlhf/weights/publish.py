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
from safetensors import safe_open
from safetensors.torch import load_file

from hpc_rlhf.checkpoint.tensorfile import read_into, write_tensors
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
    """Copy the published file at `path` into `model` one tensor at a time (cast to the model's dtype):
    never a second full state of the policy next to the model, nor a memory map of the whole file (both
    cost a model's size of resident memory; on a GPU the first would be device memory)."""
    device, what = str(next(model.parameters()).device), f"weights '{path}'"
    if lora.is_lora(model):  # adapters only: small
        return load_state(model, load_file(path, device=device), what)
    own = model.state_dict()  # the model's own tensors (no copies)
    with safe_open(path, framework="pt") as f:  # the header only
        keys = list(f.keys())
    _check_fit([k for k in own if k not in set(keys)], [k for k in keys if k not in own], what)
    with torch.no_grad():
        read_into(path, own)  # what load_state_dict does (copy_, cast), a tensor at a time, by plain reads


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` (a cpu_state of the same architecture; tied weights stored once) into `model`,
    cast to the model's dtype: under train.precision=bf16 a generator's bf16 policy takes the trainer's
    fp32 weights (load_state_dict's copy casts; no fp32 copy of the model is kept)."""
    if lora.is_lora(model):  # adapters only, onto the same base (models/lora.py)
        return lora.load_adapters(model, state, what)
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check_fit(missing, unexpected, what)


def _check_fit(missing: list[str], unexpected: list[str], what: str) -> None:
    """Tied weights are stored once (cpu_state): a missing LM head or embedding is the tied twin."""
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
