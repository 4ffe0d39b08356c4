"""Build or load the four models (policy, reference, reward, value) on one decoder family.

    tok = load_tokenizer(cfg, run_dir)                  # local folder, or the run's saved tokenizer
    policy = build_policy(cfg, tok)                     # AutoModelForCausalLM
    reward = build_reward(cfg, tok)                     # AutoModelForSequenceClassification, 1 label
    value = build_value(cfg, tok)                       # same class; used per token (models.heads)

Everything loads from local folders (no hub access: `local_files_only=True`) or is built from
`cfg.model.arch` with a random init seeded by `cfg.model.init_seed`, so every rank that builds the
"initial policy" gets bit-identical weights; that is how the scorer's frozen reference equals the
trainer's initial policy without sending weights. Dropout is off in all four models.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hpc_rlhf.config import ArchConfig, Config
from hpc_rlhf.errors import UserError, first_line
from hpc_rlhf.rundir import RunDir

_DROPOUT_KEYS = (
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_first_dropout",
    "dropout",
)


def _check_folder(path: str, key: str) -> None:
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "config.json")):
        raise UserError(f"{key} '{path}' is not a Hugging Face model folder (no config.json); give a local folder")


def arch_config(arch: ArchConfig, tok: PreTrainedTokenizerBase) -> PretrainedConfig:
    """A transformers config for a small model of `arch` whose vocabulary is `tok`'s."""
    common = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=arch.tie_embeddings,
    )
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
    for k in _DROPOUT_KEYS:
        if isinstance(getattr(config, k, None), float):
            setattr(config, k, 0.0)
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


def build_policy(cfg: Config, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The initial policy: from model.policy_path, or random init of model.arch."""
    if cfg.model.policy_path:
        _check_folder(cfg.model.policy_path, "model.policy_path")
        conf = _no_dropout(AutoConfig.from_pretrained(cfg.model.policy_path, local_files_only=True))
        model = AutoModelForCausalLM.from_pretrained(cfg.model.policy_path, config=conf, local_files_only=True)
    else:
        conf = _no_dropout(arch_config(cfg.model.arch, tok))
        model = _seeded(cfg.model.init_seed, lambda: AutoModelForCausalLM.from_config(conf))
    return model.float().eval()


def build_reference(cfg: Config, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A frozen copy of the initial policy (rebuilt identically; no weights are sent)."""
    ref = build_policy(cfg, tok)
    ref.requires_grad_(False)
    return ref


def _classifier(path: str | None, key: str, cfg: Config, tok: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    if path:
        _check_folder(path, key)
        conf = _no_dropout(AutoConfig.from_pretrained(path, local_files_only=True))
        conf.num_labels = 1
        model = AutoModelForSequenceClassification.from_pretrained(path, config=conf, local_files_only=True)
    else:
        conf = _no_dropout(arch_config(cfg.model.arch, tok))
        conf.num_labels = 1
        model = _seeded(seed, lambda: AutoModelForSequenceClassification.from_config(conf))
    return model.float().eval()


def build_reward(cfg: Config, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The reward model: model.reward_path, else a fresh random one (what `train-rm` starts from)."""
    return _classifier(cfg.model.reward_path, "model.reward_path", cfg, tok, cfg.model.init_seed + 1)


def build_value(cfg: Config, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The value model: from the reward model (value_init=reward) or from the policy's backbone."""
    if cfg.model.value_init == "reward" and cfg.model.reward_path:
        return build_reward(cfg, tok)
    path = cfg.model.policy_path
    model = _classifier(path, "model.policy_path", cfg, tok, cfg.model.init_seed + 2)
    if path is None:  # copy the initial policy's backbone into the value model
        policy = build_policy(cfg, tok)
        prefix = model.base_model_prefix
        getattr(model, prefix).load_state_dict(getattr(policy, policy.base_model_prefix).state_dict())
    return model


def place(model: torch.nn.Module, device: torch.device, bf16: bool) -> torch.nn.Module:
    model.to(device)
    if bf16 and device.type == "cuda":
        model.to(torch.bfloat16)
    return model


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    """`auto`: GPU `local_rank` (this rank's rank on its node, from MPI: dist/nodes.py) when there is a
    GPU, else CPU. dist.nodes.local_device adds the double-booking check and torch.cuda.set_device."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("runtime.device=cuda but no CUDA device is visible; use runtime.device=auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
