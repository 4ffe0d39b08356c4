"""Generation engines: what samples a generator's responses (generate.engine, docs/generation.md).

    engine = make_engine(cfg, run_dir, device, rank, tok)       # native (default) or vllm
    engine.load_file(version, weights_path)                      # a published policy version, in place
    out = engine.sample(prompts, seeds)                          # models.generate.Samples

`native` is the project's own decoder (models/generate.py), the bit-exact reference; `vllm` runs one
vLLM engine inside the generation rank's process (generation/vllm_engine.py).
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.generation.base import Engine, sampling_params
from hpc_rlhf.generation.native import NativeEngine

__all__ = ["Engine", "NativeEngine", "make_engine", "sampling_params"]


def make_engine(
    cfg: Config,
    run_dir: str,
    device: torch.device,
    rank: int,
    tok: PreTrainedTokenizerBase,
    policy: Optional[torch.nn.Module] = None,
) -> Engine:
    """The engine generate.engine names. policy: a model the native engine samples with instead of
    building one (the single-rank loop's shared policy)."""
    if cfg.generate.engine == "vllm":
        from hpc_rlhf.generation.vllm_engine import VLLMEngine  # vllm is imported only when asked for

        return VLLMEngine(cfg, run_dir, rank, tok, device)
    return NativeEngine(cfg, device, tok, policy)
