"""FSDP2 sharding of the train group's models (train.sharding=fsdp) and their full states.

    mesh = train_mesh(dp.size, device)               # the train ranks' 1-D device mesh (gloo / NCCL)
    shard_model(policy, mesh, bf16=False)            # fully_shard each decoder layer, then the rest
    full = full_model_state(policy)                  # collective: the lead gets CPU tensors, others {}
    load_full_model_state(policy, full)              # every rank passes the full state, keeps its shard
    osd = full_optim_state(policy, opt)              # collective: like opt.state_dict() of one rank
    load_full_optim_state(policy, opt, osd)

Each decoder layer is one FSDP unit (its parameters all-gathered before its forward and backward,
freed after); the policy's root unit holds embeddings, final norm and LM head. A value model is
driven through its backbone and its `score` head separately (models/forward.token_values), so each of
those is a unit of its own. Gradients are reduce-scattered as a SUM (divide factor 1): the losses are
normalised by the global token count, as with the unsharded all-reduce (dist/dp.py), so any number of
train ranks computes the one-rank update up to float order. The lean forward of models/forward.py
reads weights outside the modules' forward, which FSDP's hooks would not see: sharded models take the
Hugging Face forward.

With bf16=True (train.precision=bf16) every unit gets MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32): the shards (and AdamW state) stay fp32 masters, forward and backward compute in
bf16 on the gathered copies, gradients are reduce-scattered in fp32.

Full states have the unsharded layout exactly (parameter names; optimizer state keyed by parameter
index as torch.optim gives it), so checkpoints and published weights are the same whether the run
was sharded or not, and a checkpoint resumes with either setting. The gather puts one full copy of a
model on the lead only (cpu_offload), one model at a time.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
SCATTER = StateDictOptions(full_state_dict=True)


def train_mesh(size: int, device: torch.device) -> DeviceMesh:
    """The 1-D mesh of the train group's `size` ranks (its process group is dist/dp.py's)."""
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
    dist/weights.cpu_state gives them), the other ranks an empty dict."""
    full = get_model_state_dict(model, options=GATHER)
    if getattr(model.config, "tie_word_embeddings", False):
        full = {k: v for k, v in full.items() if "lm_head" not in k}
    return full


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every rank passes the same full state (read from a checkpoint); each keeps its shard."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def _names(model: torch.nn.Module) -> list[str]:
    """Parameter names in model.parameters() order: the optimizer's parameter indices."""
    return [n for n, _ in model.named_parameters()]


def full_optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Collective: on the lead, the optimizer state as opt.state_dict() gives it on one unsharded
    rank (keyed by parameter index); {} on the others."""
    osd = get_optimizer_state_dict(model, opt, options=GATHER)
    if not osd:
        return {}
    index = {n: i for i, n in enumerate(_names(model))}
    return {
        "state": {index[n]: s for n, s in osd["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]],
    }


def load_full_optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer, osd: dict) -> None:
    """Load an index-keyed full optimizer state (full_optim_state, or an unsharded checkpoint's)."""
    names = _names(model)
    by_name = {
        "state": {names[int(i)]: s for i, s in osd["state"].items()},
        "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in osd["param_groups"]],
    }
    set_optimizer_state_dict(model, opt, by_name, options=SCATTER)


def unsharded(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain model of `model`'s class and config whose parameters are the tensors of `full` (no
    copy: built on the meta device, then assigned), e.g. for save_pretrained on the lead."""
    with torch.device("meta"):
        plain = type(model)(model.config)
    plain.load_state_dict(full, strict=False, assign=True)
    if getattr(model.config, "tie_word_embeddings", False):
        plain.tie_weights()
    return plain.eval()
