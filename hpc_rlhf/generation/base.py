"""The interface every generation engine keeps (generation/__init__.py makes one).

    engine.load_file(version, path)      # weights/policy_vV.safetensors, as weights/publish.py wrote it
    engine.load_tensors(version, state)  # the same tensors in memory (the single-rank loop)
    out = engine.sample(prompts, seeds)  # one response per prompt; seeds from rollout.plan
    out = engine.sample(prompts, seeds, params)  # other settings than generate.* (the evaluation's)

An engine samples each response from its prompt and its seed with generate.* (temperature, top-k,
top-p, max_new_tokens, EOS), never samples the pad token (nor EOS with stop_at_eos=false), and returns
each sampled token's log-prob under logits / temperature (models.generate.Samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol

import numpy as np
import torch

from hpc_rlhf.config import Config
from hpc_rlhf.models.generate import Samples, SamplingParams


def sampling_params(cfg: Config) -> SamplingParams:
    """generate.* as the sampling settings every engine takes."""
    g = cfg.generate
    return SamplingParams(g.max_new_tokens, g.temperature, g.top_k, g.top_p, g.stop_at_eos)


class Engine(Protocol):
    name: str
    version: int  # the policy version loaded (-1: none yet)

    def load_file(self, version: int, path: str) -> None: ...

    def load_tensors(self, version: int, state: dict[str, torch.Tensor]) -> None: ...

    def sample(
        self, prompts: Sequence[np.ndarray], seeds: Sequence[int], params: Optional[SamplingParams] = None
    ) -> Samples: ...
