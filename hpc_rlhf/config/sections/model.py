"""Config sections of the models: `model:` (with `model.arch` and `model.lora`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from hpc_rlhf.config.fields import resume_safe


@dataclass(frozen=True)
class ArchConfig:
    """A small decoder built with random init when `model.policy_path` is unset."""

    model_type: Literal["llama", "qwen2", "mistral", "gpt_neox", "phi3", "gemma", "gpt2"] = "llama"
    """Hugging Face architecture family of all four models (a model folder may be of any family)."""
    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 2
    """Decoder blocks."""
    num_heads: int = 2
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = 256
    """MLP width (llama/qwen2 SwiGLU; gpt2 uses 4*hidden)."""
    max_position: int = 256
    """Longest prompt+response the model accepts."""
    tie_embeddings: bool = False
    """Tie input and output embeddings."""


LORA_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the policy (peft; docs/lora.md): only the adapters train, the reference is
    the base with the adapters disabled, publishing and checkpoints carry the adapters only. No dropout
    (as in all four models: a dropout mask would be a random draw outside the seeded plan)."""

    r: int = 0
    """Adapter rank (0 = off: the whole policy trains)."""
    alpha: float = 16.0
    """Scale numerator: the adapter update is (alpha / r) * B @ A."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_DEFAULT_TARGETS))
    """Names of the Linear modules that get adapters (llama family: attention q/k/v/o and the MLP
    projections; gpt2: c_attn, c_proj, c_fc); names the model lacks fail when the policy is built."""
    export: Literal["merged", "adapter"] = resume_safe("merged")
    """RUN_DIR/final/policy as `merged`: a plain Hugging Face folder (base + adapters folded in), or
    `adapter`: a peft adapter folder (adapter_config.json names the base folder)."""
    init_seed: int = 4321
    """Seed of the adapters' random init (A; B starts at zero, so version 0 is the base exactly)."""


@dataclass(frozen=True)
class ModelConfig:
    policy_path: Optional[str] = None
    """Local Hugging Face folder of the initial policy (any causal LM); unset = build from `arch`."""
    reward_path: Optional[str] = None
    """Local folder written by `hpc-rlhf train-rm` (or any sequence classifier with one label)."""
    tokenizer_path: Optional[str] = None
    """Local tokenizer folder; unset = the policy folder's, or the demo's word-level tokenizer."""
    reward_tokenizer_path: Optional[str] = None
    """The reward model's tokenizer folder; unset = the reward model folder's own tokenizer files when it has
    some, else the policy's. When it differs from the policy's, the scorer decodes prompt and response to text
    and re-encodes them with it (models/retokenize.py); when the same, the policy's tokens are scored as they are."""
    reward_chat_template: bool = False
    """Re-encode for the reward model with its tokenizer's chat template (the prompt as the user turn, the
    response as the assistant turn); applies only when the reward model's tokenizer differs from the policy's."""
    value_init: Literal["reward", "policy"] = "reward"
    """Initialise the value model from the reward model (NeMo-Aligner) or from the policy backbone."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    """Architecture used when building models from scratch."""
    init_seed: int = 1234
    """Seed of the random init of models built from `arch` (independent of the run seed)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """Train low-rank adapters instead of the whole policy (lora.r > 0)."""
