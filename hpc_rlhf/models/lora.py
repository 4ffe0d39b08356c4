"""LoRA on the policy through peft (model.lora.r > 0; docs/lora.md): only the adapters train.

    policy = lora.apply(build_policy(cfg, tok), cfg)   # the same model object, adapters injected, base frozen
    tensors = lora.adapter_state(policy)               # what is published and checkpointed: adapters + base hash
    lora.load_adapters(policy, tensors, "weights ...") # a generator / a resume: refuses another base
    with lora.base_only(policy): ...                   # the base alone (the reference), no second copy
    lora.export(policy, tok, folder)                   # merged HF folder or a peft adapter folder
    for name, t in lora.merged_tensors(policy): ...    # base + scale * B @ A, a tensor at a time (vLLM)

`apply` keeps the Hugging Face model (LlamaForCausalLM, ...) as the object the roles hold: its target
Linear modules become peft LoRA layers, so the roles' forward passes and sampling run through them
unchanged. Such a model never takes the lean path of models/forward.py (which reads `.weight` of each
Linear and would skip the adapters): it runs the Hugging Face forward, in training and in generation.
The adapters' init is seeded by model.lora.init_seed (A random, B zero: version 0 is the base exactly),
so every rank that applies LoRA holds the same adapters without sending them.

The base is identified by the SHA-256 of its tensors at `apply` time (fp32, before placing on a device),
carried as the uint8 tensor BASE_KEY beside the adapters: loading adapters onto another base fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError

BASE_KEY = "hpc_rlhf.lora.base_sha256"  # the base's SHA-256 (32 uint8) among the adapter tensors
_MARK = "_hpc_lora"  # model.__dict__ entry: {"peft": PeftModel, "base_sha": str, "export": str, "base_path": str}


def enabled(cfg: Config) -> bool:
    """Whether the policy trains LoRA adapters (model.lora.r > 0)."""
    return cfg.model.lora.r > 0


def is_lora(model: torch.nn.Module) -> bool:
    """Whether `apply` injected adapters into `model`."""
    return _MARK in model.__dict__


def linear_names(model: torch.nn.Module) -> list[str]:
    """The last name component of every Linear-like module of `model` (what target_modules may name)."""
    from transformers.pytorch_utils import Conv1D

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))})


def base_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of `model`'s tensors, in state_dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()


def _check_targets(model: torch.nn.Module, cfg: Config) -> None:
    have = linear_names(model)
    missing = [t for t in cfg.model.lora.target_modules if t not in have]
    if missing:
        raise UserError(
            f"config key 'model.lora.target_modules': {missing} are not modules of the policy "
            f"({model.config.model_type}); its Linear modules are {have}"
        )


def check_targets(cfg: Config, run_dir: str) -> None:
    """Raise UserError when model.lora.target_modules names a module the policy lacks: checked on the
    policy's architecture without its weights (meta device), before any rank starts (launch/prepare.py)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from hpc_rlhf.models.build import arch_config, load_tokenizer

    if cfg.model.policy_path:
        conf = AutoConfig.from_pretrained(cfg.model.policy_path, local_files_only=True)
    else:
        conf = arch_config(cfg.model.arch, load_tokenizer(cfg, run_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    _check_targets(model, cfg)


def apply(model: PreTrainedModel, cfg: Config) -> PreTrainedModel:
    """Inject the adapters of `cfg.model.lora` into `model` (in place; returned for chaining): the base is
    frozen, only the adapters require grad. Raises UserError naming target modules the model lacks."""
    import peft

    lo = cfg.model.lora
    _check_targets(model, cfg)
    sha = base_sha256(model)
    conf = peft.LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=0.0, target_modules=list(lo.target_modules), bias="none"
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", "fan_in_fan_out is set to False", UserWarning)  # gpt2's Conv1D: peft sets it
        torch.manual_seed(lo.init_seed)
        wrapped = peft.get_peft_model(model, conf)
    path = cfg.model.policy_path
    model.__dict__[_MARK] = {
        "peft": wrapped,
        "base_sha": sha,
        "export": lo.export,
        "base_path": os.path.abspath(path) if path else None,
    }
    model.__dict__["_hpc_lean_ok"] = False  # models/forward.py: the lean path would skip the adapters
    return model


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the adapter tensors (the model's own state_dict names) and the base's SHA-256."""
    out = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items() if "lora_" in k}
    out[BASE_KEY] = torch.tensor(list(bytes.fromhex(model.__dict__[_MARK]["base_sha"])), dtype=torch.uint8)
    return out


def load_adapters(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy adapter tensors (an `adapter_state`) into `model`. Raises RuntimeError when they were trained
    on another base or do not fit the model's adapters."""
    mine = model.__dict__[_MARK]["base_sha"]
    sha = state.get(BASE_KEY)
    theirs = bytes(sha.tolist()).hex() if sha is not None else None
    if theirs != mine:
        raise RuntimeError(
            f"{what} are LoRA adapters of another base (base sha256 {str(theirs)[:16]}, this one {mine[:16]}); "
            "model.policy_path or model.arch changed"
        )
    want = {k for k in model.state_dict() if "lora_" in k}
    got = {k: v for k, v in state.items() if k != BASE_KEY}
    if set(got) != want:
        raise RuntimeError(
            f"{what} do not fit the adapters: missing {sorted(want - set(got))}, unexpected {sorted(set(got) - want)}"
        )
    model.load_state_dict(got, strict=False)


@contextlib.contextmanager
def base_only(model: torch.nn.Module) -> Iterator[None]:
    """Within the block `model` computes with its adapters disabled: the base alone (the reference)."""
    with model.__dict__[_MARK]["peft"].disable_adapter():
        yield


class BaseView:
    """The base of a LoRA policy, as a model the forward helpers (models/forward.py) take: the reference
    of a process that also trains the policy, without a second copy of the weights. Attributes come from
    the policy; the lean path reads each Linear's `.weight`, which is the base's; a call runs the policy
    with its adapters disabled. Computes what a separately built base computes (same weights, same path)."""

    def __init__(self, model: torch.nn.Module):
        self.__dict__["_policy"] = model

    def __getattr__(self, name: str):
        if name.startswith("_hpc_"):  # the forward helpers' caches belong to the view, not the policy
            raise AttributeError(name)
        return getattr(self.__dict__["_policy"], name)

    def __call__(self, *args, **kwargs):
        with base_only(self.__dict__["_policy"]):
            return self.__dict__["_policy"](*args, **kwargs)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer steps: those requiring grad (all of a model without adapters)."""
    return [p for p in model.parameters() if p.requires_grad]


def merged_tensors(model: torch.nn.Module, tied_once: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the base under its plain names with each adapter folded in (W + scale * B @ A),
    one at a time, on the model's device: a merged tensor is new, the others are the model's own (detached).
    tied_once: tied weights under their first name only (as the publisher stores them)."""
    from peft.tuners.lora import LoraLayer

    layers = {f"{n}.base_layer.weight": m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    seen: set[int] = set()
    for k, v in model.state_dict(keep_vars=True).items():
        if "lora_" in k or (tied_once and id(v) in seen):
            continue
        seen.add(id(v))
        t = v.detach()
        if k in layers:
            with torch.no_grad():
                t = t + layers[k].get_delta_weight("default").to(t.dtype)
        yield k.replace(".base_layer.", "."), t


def merged_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """merged_tensors as CPU copies (every name, tied ones too: save_pretrained drops its own)."""
    return {k: t.to("cpu", copy=True).contiguous() for k, t in merged_tensors(model)}


def export(model: PreTrainedModel, tok: PreTrainedTokenizerBase, folder: str) -> None:
    """Write `model` into `folder` as model.lora.export says: `merged`, a plain Hugging Face folder
    (AutoModelForCausalLM.from_pretrained), or `adapter`, a peft adapter folder whose adapter_config.json
    names the base folder (peft.PeftModel.from_pretrained(base, folder)); the tokenizer beside it."""
    info = model.__dict__[_MARK]
    if info["export"] == "adapter":
        peft_model = info["peft"]
        peft_model.peft_config["default"].base_model_name_or_path = info["base_path"]
        peft_model.save_pretrained(folder, safe_serialization=True)
    else:
        state = merged_state(model)
        model.save_pretrained(folder, state_dict=state, safe_serialization=True)
    tok.save_pretrained(folder)
