"""Build or load the four models (policy, reference, reward, value) on one decoder family.

    tok = load_tokenizer(cfg, run_dir)                  # local folder, or the run's saved tokenizer
    policy = build_policy(cfg, tok, device)             # AutoModelForCausalLM, on `device`
    reward = build_reward(cfg, tok, device)             # a one-label classifier (models/scalar_head.py)
    value = build_value(cfg, tok, device)               # same class; used per token (models.forward)

A family without a sequence-classification class in transformers (Granite, Cohere, OLMoE, ...) gets the
family's base model plus a scalar `score` head instead (models/scalar_head.py: same weight names, an
ordinary folder that `load_scalar_model` and `model.reward_path` load back).

Everything loads from local folders (no hub access: `local_files_only=True`) or is built from
`cfg.model.arch` with a random init seeded by `cfg.model.init_seed`, so every rank that builds the
"initial policy" gets bit-identical weights; that is how the scorer's frozen reference equals the
trainer's initial policy without sending weights. Dropout is off in all four models.

A folder may hold any decoder family transformers knows (llama, qwen2, mistral, gpt_neox, phi3,
gemma, ...). It loads straight into its run dtype (`model_dtype`: fp32; bf16 on a GPU with
runtime.bf16; with train.precision=bf16, bf16 for the generators' and scorers' models, built with
compute=True, and fp32 masters for the trainer's) and onto `device`: no fp32 CPU copy made first and cast after. A policy whose output
layer is wider than its tokenizer (a padded vocabulary) samples and scores only the tokenizer's ids. The one head a folder may
lack is a classifier's `score` (a value model from a causal-LM folder, a reward model before
`train-rm`): it is drawn from a generator seeded by the model's seed, never from torch's global RNG,
so every rank and every run gets the same head.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hpc_rlhf.config import ArchConfig, Config
from hpc_rlhf.errors import UserError, first_line
from hpc_rlhf.models.forward import limit_vocab
from hpc_rlhf.models.scalar_head import can_score, classifier_class
from hpc_rlhf.rundir import RunDir


def _check_folder(path: str, key: str) -> None:
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "config.json")):
        raise UserError(f"{key} '{path}' is not a Hugging Face model folder (no config.json); give a local folder")


def model_dtype(cfg: Config, device: torch.device | str | None, compute: bool = False) -> torch.dtype:
    """The dtype a model is held in on `device`. train.precision=bf16: bf16 for a `compute` model (the
    generator's policy, the scorer's reference and reward model), fp32 otherwise (the trainer's
    masters, trained under bf16 autocast). Else bf16 on a GPU when runtime.bf16, else fp32."""
    if cfg.train.precision == "bf16":
        return torch.bfloat16 if compute else torch.float32
    on_gpu = device is not None and torch.device(device).type == "cuda"
    return torch.bfloat16 if cfg.runtime.bf16 and on_gpu else torch.float32


def _folder_config(path: str, key: str, tok: PreTrainedTokenizerBase | None = None) -> PretrainedConfig:
    """The folder's config, dropout off; with `tok`: checked to embed every token of `tok`."""
    _check_folder(path, key)
    try:
        conf = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise UserError(f"{key} '{path}': config.json could not be read ({first_line(e)})") from None
    vocab = getattr(conf.get_text_config(), "vocab_size", None)
    if tok is not None and vocab is not None and len(tok) > vocab:
        raise UserError(
            f"{key} '{path}' has {vocab} embeddings but the tokenizer has {len(tok)} tokens; "
            f"use the model's own tokenizer (model.tokenizer_path)"
        )
    return _no_dropout(conf)


def check_folders(cfg: Config, tok: PreTrainedTokenizerBase) -> None:
    """Before any rank starts (launch/prepare.py): the policy folder is a causal LM of a family transformers
    knows and embeds every token of `tok`; the reward folder is of a family a scalar-head model can be made
    of (models/scalar_head.py). Reads config.json only; a missing weight is found when a rank loads it."""
    for path, key, ok, what in (
        (cfg.model.policy_path, "model.policy_path", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.__contains__, "causal LM"),
        (cfg.model.reward_path, "model.reward_path", can_score, "sequence classifier or base model"),
    ):
        if path:
            conf = _folder_config(path, key, tok if key == "model.policy_path" else None)
            if not ok(conf.model_type):
                raise UserError(f"{key} '{path}': transformers has no {what} class for model_type '{conf.model_type}'")


def _from_folder(cls, path: str, key: str, conf: PretrainedConfig, device, dtype: torch.dtype, seed: int):
    """`cls` loaded from a local folder straight into `dtype` on `device`. Only a classifier's `score`
    head may be missing from the folder; it is initialised from `seed` (see the module docstring)."""
    device = torch.device(device or "cpu")
    place_kw = {} if device.type == "cpu" else {"device_map": {"": device}}
    try:
        model, info = cls.from_pretrained(
            path, config=conf, local_files_only=True, dtype=dtype, output_loading_info=True, **place_kw
        )
    except Exception as e:
        raise UserError(f"{key} '{path}' could not be loaded as {cls.__name__} ({first_line(e)})") from None
    head = sorted(k for k in info["missing_keys"] if k.split(".")[0] == "score")
    missing = sorted(set(info["missing_keys"]) - set(head))
    if missing or (head and cls is AutoModelForCausalLM):
        raise UserError(
            f"{key} '{path}' lacks weights {', '.join((missing or head)[:3])}: not a complete "
            f"{cls.__name__.replace('AutoModelFor', '')} folder"
        )
    _init_head(model, head, conf, seed)
    return model


@torch.no_grad()
def _init_head(model: PreTrainedModel, names: list[str], conf: PretrainedConfig, seed: int) -> None:
    """Weights N(0, initializer_range), biases 0, drawn on the CPU from a generator seeded by `seed`."""
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(conf.get_text_config(), "initializer_range", 0.02))
    params = dict(model.named_parameters())
    for name in names:
        p = params[name]
        value = torch.zeros(p.shape) if name.endswith("bias") else torch.randn(p.shape, generator=gen) * std
        p.copy_(value)


def arch_config(arch: ArchConfig, tok: PreTrainedTokenizerBase) -> PretrainedConfig:
    """A transformers config for a small model of `arch` whose vocabulary is `tok`'s."""
    common = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=arch.tie_embeddings,
    )
    if arch.model_type == "mistral":  # full attention, as Mistral v0.2+ (the lean path)
        common["sliding_window"] = None
    if arch.model_type == "gemma":  # hidden_size // num_heads, not gemma's default of 256
        common["head_dim"] = arch.hidden_size // arch.num_heads
    if arch.model_type == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            n_embd=arch.hidden_size,
            n_layer=arch.num_layers,
            n_head=arch.num_heads,
            n_positions=arch.max_position,
            n_inner=arch.intermediate_size,
            **common,
        )
    return AutoConfig.for_model(
        arch.model_type,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        max_position_embeddings=arch.max_position,
        **common,
    )


def _no_dropout(config: PretrainedConfig) -> PretrainedConfig:
    """Every dropout probability of `config` (and its text config) set to 0: any key holding "dropout"
    or ending in "pdrop", whatever the family names it (attention_dropout, resid_pdrop, classifier_dropout...)."""
    for c in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
        for k, v in list(vars(c).items()):
            if isinstance(v, float) and ("dropout" in k or k.endswith("pdrop")):
                setattr(c, k, 0.0)
    return config


def _seeded(seed: int, fn):
    """Run fn under a private torch RNG seeded with `seed` (random init independent of history)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def load_tokenizer(cfg: Config, run_dir: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer from model.tokenizer_path, else the policy folder, else RUN_DIR/tokenizer."""
    path = cfg.model.tokenizer_path or cfg.model.policy_path
    if path is None and run_dir is not None and os.path.isdir(RunDir(run_dir).tokenizer):
        path = RunDir(run_dir).tokenizer
    if path is None:
        raise UserError(
            "no tokenizer: set model.tokenizer_path or model.policy_path (or run the demo, which builds one)"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise UserError(f"tokenizer folder '{path}' could not be loaded ({first_line(e)})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer '{path}' has no EOS token; set one in its tokenizer_config.json")
    tok.padding_side = "left"
    return tok


def build_policy(cfg: Config, tok: PreTrainedTokenizerBase, device=None, compute: bool = False) -> PreTrainedModel:
    """The initial policy on `device` (default CPU), in model_dtype(compute): from model.policy_path, or
    random init of model.arch (built in fp32 on the CPU, the same on every rank, then moved and cast)."""
    device = torch.device(device or "cpu")
    if cfg.model.policy_path:
        conf = _folder_config(cfg.model.policy_path, "model.policy_path", tok)
        dtype = model_dtype(cfg, device, compute)
        model = _from_folder(AutoModelForCausalLM, cfg.model.policy_path, "model.policy_path", conf, device, dtype, 0)
        limit_vocab(model, len(tok))
    else:
        conf = _no_dropout(arch_config(cfg.model.arch, tok))
        model = _seeded(cfg.model.init_seed, lambda: AutoModelForCausalLM.from_config(conf))
        model.to(device=device, dtype=model_dtype(cfg, device, compute))
    return model.eval()


def build_reference(cfg: Config, tok: PreTrainedTokenizerBase, device=None, compute: bool = False) -> PreTrainedModel:
    """A frozen copy of the initial policy (loaded again in place; no weights are sent or copied)."""
    ref = build_policy(cfg, tok, device, compute)
    ref.requires_grad_(False)
    return ref


def build_classifier(
    path: str | None, key: str, cfg: Config, tok: PreTrainedTokenizerBase, seed: int, device=None, compute=False
) -> PreTrainedModel:
    """A one-label sequence classifier: folder `path` (config key `key`; a causal LM's folder gets a new
    `score` head drawn from `seed`), or model.arch initialised from `seed`. Dropout off, in eval mode.
    Transformers' class of the family where it has one, else the family's base model + a scalar head."""
    device = torch.device(device or "cpu")
    if path:
        conf = _folder_config(path, key)  # a reward model may have its own tokenizer
        conf.num_labels = 1
        cls = classifier_class(conf)
        model = _from_folder(cls, path, key, conf, device, model_dtype(cfg, device, compute), seed)
    else:
        conf = _no_dropout(arch_config(cfg.model.arch, tok))
        conf.num_labels = 1
        model = _seeded(seed, lambda: classifier_class(conf).from_config(conf))
        model.to(device=device, dtype=model_dtype(cfg, device, compute))
    return model.eval()


def build_reward(cfg: Config, tok: PreTrainedTokenizerBase, device=None, compute: bool = False) -> PreTrainedModel:
    """The reward model: model.reward_path, else a fresh random one (what `train-rm` starts from)."""
    return build_classifier(
        cfg.model.reward_path, "model.reward_path", cfg, tok, cfg.model.init_seed + 1, device, compute
    )


def build_value(cfg: Config, tok: PreTrainedTokenizerBase, device=None) -> PreTrainedModel:
    """The value model: from the reward model (value_init=reward) or from the policy's backbone
    (the policy folder loaded once as a classifier, its score head seeded from init_seed + 2)."""
    if cfg.model.value_init == "reward" and cfg.model.reward_path:
        return build_reward(cfg, tok, device)
    path = cfg.model.policy_path
    model = build_classifier(path, "model.policy_path", cfg, tok, cfg.model.init_seed + 2, device)
    if path is None:  # copy the initial policy's backbone into the value model
        policy = build_policy(cfg, tok, device)
        prefix = model.base_model_prefix
        getattr(model, prefix).load_state_dict(getattr(policy, policy.base_model_prefix).state_dict())
    return model


def place(model: torch.nn.Module, device: torch.device, bf16: bool) -> torch.nn.Module:
    """`model` on `device` (bf16 on a GPU when `bf16`: runtime.bf16, which the trainer ignores under
    train.precision=bf16); a no-op for a model built there by build_*."""
    model.to(device)
    if bf16 and device.type == "cuda":
        model.to(torch.bfloat16)
    return model


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    """`auto`: GPU `local_rank` (this rank's rank on its node, from MPI: cluster/nodes.py) when there is a
    GPU, else CPU. dist.nodes.local_device adds the double-booking check and torch.cuda.set_device."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("runtime.device=cuda but no CUDA device is visible; use runtime.device=auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
