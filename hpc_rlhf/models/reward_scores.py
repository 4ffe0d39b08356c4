"""The reward model's scores of samples (a `kind: model` reward source), as the scoring ranks and the
evaluations compute them.

    rm = RewardScorer(cfg, policy_tok, device)    # the run's reward model (model.reward_path), placed
    rm_batch = rm.batch(batch, prompts, responses, prompt_source, prompt_index)   # its input (forward.Batch)
    scores = rm.scores(rm_batch)                  # (B,) float32: the score at each sequence's last token

The input is the policy's batch when the reward model reads the policy's tokens, else the samples decoded
and re-encoded with its own tokenizer (models/retokenize.py), whose chat template (when `wants_raw`) takes
the prompts as written in the prompt file: `prompt_source.raw(i)` of each sample's prompt index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hpc_rlhf.config import Config
from hpc_rlhf.models.build import build_reward, place
from hpc_rlhf.models.forward import Batch, sequence_scores
from hpc_rlhf.models.retokenize import RewardTokens


class RewardScorer:
    def __init__(self, cfg: Config, policy_tok: Any, device):
        self.device = device
        self.model = place(build_reward(cfg, policy_tok, device, compute=True), device, cfg.runtime.bf16)
        self.retok = RewardTokens.of(cfg, policy_tok)  # None: the RM reads the policy's tokens

    @property
    def wants_raw(self) -> bool:
        """Whether `batch` uses the prompts as written (the RM's own chat template)."""
        return self.retok is not None and self.retok.chat

    def batch(
        self, batch: Batch, prompts: Sequence[Any], responses: Sequence[Any], prompt_source: Any, prompt_index: Any
    ) -> Batch:
        """The reward model's input for these samples (`batch`: the policy's layout of them)."""
        if self.retok is None:
            return batch
        raw = [prompt_source.raw(int(i)) for i in prompt_index] if self.wants_raw else None
        return self.retok.batch(prompts, responses, raw).to(self.device)

    @torch.no_grad()
    def scores(self, rm_batch: Batch) -> np.ndarray:
        return sequence_scores(self.model, rm_batch).float().cpu().numpy().astype(np.float32)
