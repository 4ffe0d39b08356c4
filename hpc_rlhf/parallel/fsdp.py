"""FSDP2 sharding of the train group's models (train.sharding=fsdp) and their full states.

    mesh = train_mesh(dp.size, device)               # the train ranks' 1-D device mesh (gloo / NCCL)
    shard_model(policy, mesh, bf16=False)            # fully_shard each decoder layer, then the rest
    t = gather_full(param)                           # collective: one parameter's full CPU tensor (publishing)
    full = full_model_state(policy)                  # collective: the lead gets all CPU tensors, others {}

Each decoder layer is one FSDP unit (its parameters all-gathered before its forward and backward,
freed after); the policy's root unit holds embeddings, final norm and LM head. A value model is
driven through its backbone and its `score` head separately (models/forward.token_values), so each of
those is a unit of its own. Gradients are reduce-scattered as a SUM (divide factor 1): the losses are
normalised by the global token count, as with the unsharded all-reduce (parallel/dp.py), so any number of
train ranks computes the one-rank update up to float order. The lean forward of models/forward.py
reads weights outside the modules' forward, which FSDP's hooks would not see: sharded models take the
Hugging Face forward.

With bf16=True (train.precision=bf16) every unit gets MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32): the shards (and AdamW state) stay fp32 masters, forward and backward compute in
bf16 on the gathered copies, gradients are reduce-scattered in fp32.

Full tensors have the unsharded layout exactly (parameter names, shapes, values), so published weights
and the final export are the same whether the run was sharded or not. The weight publisher gathers
one parameter at a time (`gather_full`, weights/publish.py): no rank ever holds a full copy of the
policy beside its shards. `full_model_state` gathers them all at once onto the lead (cpu_offload), for
tests and small models only. Checkpoints gather nothing: each train rank writes its own shards
(checkpoint/fsdp_state.py, checkpoint/rank_files.py), and any checkpoint loads into any layout one
tensor at a time.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def train_mesh(size: int, device: torch.device) -> DeviceMesh:
    """The 1-D mesh of the train group's `size` ranks (its process group is parallel/dp.py's)."""
    return init_device_mesh(torch.device(device).type, (size,))


def shard_model(model: torch.nn.Module, mesh: DeviceMesh, bf16: bool = False) -> torch.nn.Module:
    """Shard `model` (a *ForCausalLM or a 1-label *ForSequenceClassification) in place over `mesh`;
    bf16: compute in bf16 on fp32 shards, reduce in fp32 (MixedPrecisionPolicy)."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kw = {"mesh": mesh, "mp_policy": mp} if mp is not None else {"mesh": mesh}
    base = getattr(model, model.base_model_prefix)
    for layer in base.layers:
        fully_shard(layer, **kw)
    if hasattr(model, "score"):  # the value model: backbone and head are called separately
        fully_shard(base, **kw)
        fully_shard(model.score, **kw)
    else:
        fully_shard(model, **kw)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # a plain SUM (gloo has no PREMUL_SUM / AVG)
            m.set_force_sum_reduction_for_comms(True)
    model._hpc_lean_ok = False  # the Hugging Face forward: FSDP's hooks gather the weights
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(m, FSDPModule) for m in model.modules())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective over the train ranks: the lead gets the full CPU tensors (tied weights once, as
    weights/publish.cpu_state gives them), the other ranks an empty dict."""
    full = get_model_state_dict(model, options=GATHER)
    if getattr(model.config, "tie_word_embeddings", False):
        full = {k: v for k, v in full.items() if "lm_head" not in k}
    return full


def gather_full(t: torch.Tensor) -> torch.Tensor:
    """The full value of one of a model's tensors, on the CPU. A sharded one (a DTensor): an all-gather,
    a collective over the train ranks (every rank calls it, for the same tensors in the same order),
    and every rank gets the full tensor; a plain one: itself, copied only when it is not on the CPU."""
    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().to("cpu")
