"""The native engine: the project's own decoder (models/generate.py), bit-exact on every layout.

engine = NativeEngine(cfg, device, tok)     # builds the policy as the generator always did
engine.load_file(v, path); out = engine.sample(prompts, seeds)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.generation.base import sampling_params
from hpc_rlhf.models import lora
from hpc_rlhf.models.build import build_policy, place
from hpc_rlhf.models.generate import Samples, SamplingParams, sample
from hpc_rlhf.weights.publish import load_into, load_state


class NativeEngine:
    name = "native"

    def __init__(
        self, cfg: Config, device: torch.device, tok: PreTrainedTokenizerBase, policy: Optional[torch.nn.Module] = None
    ):
        if policy is None:
            policy = build_policy(cfg, tok, device, compute=True)  # train.precision=bf16: held in bf16
            policy = lora.apply(policy, cfg) if lora.enabled(cfg) else policy  # LoRA: base + adapters (peft)
            policy = place(policy, device, cfg.runtime.bf16)
        self.policy = policy
        self.params = sampling_params(cfg)
        self.eos_id, self.pad_id = tok.eos_token_id, tok.pad_token_id
        self.version = -1

    def load_file(self, version: int, path: str) -> None:
        load_into(self.policy, path)
        self.version = version

    def load_tensors(self, version: int, state: dict[str, torch.Tensor]) -> None:
        load_state(self.policy, state, f"policy v{version}")
        self.version = version

    def sample(
        self, prompts: Sequence[np.ndarray], seeds: Sequence[int], params: Optional[SamplingParams] = None
    ) -> Samples:
        return sample(self.policy, prompts, seeds, params or self.params, self.eos_id, self.pad_id)
