"""The weight publisher: policy versions written to RUN_DIR/weights a tensor at a time, and read back.

The one place a generation engine reads a policy version from. Writing (the train ranks):

    write_config(run_dir, policy)                         # weights/config.json (+ generation_config.json), once
    path = publish_model(run_dir, v, policy, write=lead)  # under FSDP a collective: every train rank calls it
    path = publish(run_dir, v, tensors)                   # a version held as tensors (restored from a checkpoint)
    prune(run_dir, keep_from)                             # versions < keep_from: no generator needs them

Reading (a generation engine, any process on a node that sees RUN_DIR):

    load_into(model, weights_path(run_dir, v))     # into the model's own tensors, one tensor at a time
    folder = version_folder(run_dir, v)            # version v as a Hugging Face folder, no copy

Files: RUN_DIR/weights/policy_vXXXXXX.safetensors, written under a temporary name and renamed into
place, so a reader never sees a half-written version. A version's file is written as save_pretrained
writes model.safetensors (the same tensor names, order, alignment and `{"format": "pt"}` metadata:
byte-identical), so an engine that loads a Hugging Face folder (config.json + model.safetensors, e.g.
vLLM's reload_weights) takes it as it is: `version_folder` makes RUN_DIR/weights/policy_vXXXXXX/ of
hard links to the version's file and to weights/config.json (+ generation_config.json), made once per
version and asked for by the reader; nothing is copied, and a link keeps the bytes readable after the
version is pruned. A LoRA policy's versions are its adapters (and its base's hash, models/lora.py):
they have no folder view. The final export (RUN_DIR/final/policy) of a run that publishes files is the
last version's file linked in the same way (models/export.py).

`publish_model` writes the live policy without a second copy of it: each tensor is fetched, written
and dropped before the next (`checkpoint/tensorfile.write_tensor_stream`). Unsharded, the tensors are
the model's own (copied to the CPU one at a time where the model is on a GPU); under
train.sharding=fsdp each parameter is all-gathered on its own (parallel/fsdp.gather_full), so the
lead, which writes, holds one full parameter beyond its shards, and the other train ranks take part
in the gathers and write nothing. Tied weights are stored once (the first name, as save_pretrained).

A published file only has to be complete when a generator opens it (the rename sees to that), not
durable: versions are rebuilt from the checkpoint on resume, so nothing is fsynced here. Versions no
generator can still need (older than current - max_policy_lag - 1) are pruned by the publisher
(weights/versions.py), their folder views with them.
"""

from __future__ import annotations

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hpc_rlhf.checkpoint.tensorfile import file_order, read_into, write_tensor_stream, write_tensors
from hpc_rlhf.models import lora
from hpc_rlhf.models.export import link_or_copy, save_config
from hpc_rlhf.parallel.fsdp import gather_full
from hpc_rlhf.rundir import (
    HF_CONFIGS,
    HF_WEIGHTS,
    RunDir,
    parse_weights_folder_name,
    parse_weights_name,
    remove_path,
    remove_tree,
    tmp_path,
)

METADATA = {"format": "pt"}  # what save_pretrained writes (transformers checks it on load)


def weights_path(run_dir: str, version: int) -> str:
    return RunDir(run_dir).weights(version)


def cpu_state(model: torch.nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The model's tensors, detached, on the CPU, tied weights stored once; copy=False: the model's own
    CPU tensors where they already are (valid until the model changes). A policy with LoRA adapters:
    the adapters alone (copies) and its base's hash (models/lora.py): what is published and checkpointed."""
    if lora.is_lora(model):
        return lora.adapter_state(model)
    return {k: v.detach().to("cpu", copy=copy).contiguous() for k, v in model_tensors(model).items()}


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own state tensors by name (under FSDP its sharded DTensors), tied weights once (the
    first name)."""
    seen: set[int] = set()
    out = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) not in seen:
            seen.add(id(v))
            out[k] = v
    return out


def publish_model(run_dir: str, version: int, model: torch.nn.Module, write: bool = True) -> str:
    """Publish the live `model` as version `version`, one tensor at a time (module docstring). Under FSDP
    a collective of the train ranks; only a rank with write=True writes. Returns the version's path."""
    path = weights_path(run_dir, version)
    if lora.is_lora(model):  # the adapters: small, copied
        return publish(run_dir, version, lora.adapter_state(model)) if write else path
    own = model_tensors(model)
    specs = {k: (v.dtype, list(v.shape)) for k, v in own.items()}  # a DTensor's are its global ones
    if not write:  # the gathers only (a sharded model's other train ranks), in the writer's order
        for name in file_order(specs):
            gather_full(own[name])
        return path

    def fetch(name: str) -> torch.Tensor:
        return gather_full(own[name]).contiguous()

    _save(path, lambda tmp: write_tensor_stream(tmp, specs, fetch, METADATA))
    return path


def publish(run_dir: str, version: int, tensors: dict[str, torch.Tensor]) -> str:
    """Publish version `version` held as CPU tensors (a cpu_state). Returns its path."""
    path = weights_path(run_dir, version)
    _save(path, lambda tmp: write_tensors(tmp, tensors, METADATA))
    return path


def _save(path: str, write) -> None:
    """write(tmp) a file under a temporary name, then rename it to `path` (no fsync: module docstring)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tmp_path(path)
    write(tmp)
    os.replace(tmp, path)


def write_config(run_dir: str, model: torch.nn.Module) -> None:
    """RUN_DIR/weights/config.json (+ generation_config.json) of the policy, which every version's folder
    view links to (no-op for a LoRA policy: its versions are adapters)."""
    if lora.is_lora(model):
        return
    d = RunDir(run_dir).weights_dir
    tmp = tmp_path(os.path.join(d, "config"))
    save_config(model, tmp)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(d, name))
    os.rmdir(tmp)


def version_folder(run_dir: str, version: int) -> str:
    """Version `version` as a Hugging Face folder (config files + model.safetensors), all hard links to the
    published files: made on the first request (atomically), remade if the version was published again.
    Raises FileNotFoundError when the version or the config is not published (or a LoRA run's)."""
    src, out = weights_path(run_dir, version), RunDir(run_dir).weights_folder(version)
    d = RunDir(run_dir).weights_dir
    if not os.path.exists(os.path.join(d, HF_CONFIGS[0])):
        raise FileNotFoundError(f"{d}/config.json: no policy config published (a LoRA run publishes adapters)")
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: policy version {version} is not published (or pruned)")
    mine = os.path.join(out, HF_WEIGHTS)
    if os.path.exists(mine) and os.path.samefile(mine, src):
        return out
    tmp = tmp_path(out)
    os.makedirs(tmp)
    for name in HF_CONFIGS:
        if os.path.exists(os.path.join(d, name)):
            link_or_copy(os.path.join(d, name), os.path.join(tmp, name))
    link_or_copy(src, os.path.join(tmp, HF_WEIGHTS))
    remove_tree(out)
    try:
        os.replace(tmp, out)
    except OSError:  # another reader made it meanwhile (a folder is not replaced by a rename)
        remove_path(tmp)
        if not os.path.samefile(mine, src):
            raise
    return out


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
    """Remove the published versions < keep_from and their folder views (an open file stays readable)."""
    d = RunDir(run_dir).weights_dir
    if not os.path.isdir(d):
        return
    for name in os.listdir(d):
        v = parse_weights_name(name)
        v = parse_weights_folder_name(name) if v is None else v
        if v is not None and v < keep_from:
            remove_path(os.path.join(d, name))
