"""The run's prompt set, indexed by global prompt index, from the source `task.name` names.

    ps = PromptSet(cfg, tok)
    len(ps); ps[i]            # -> int32 token ids of prompt i

A source is registered here by name as a 'module:function' string and imported on first use, so
this package imports no task: the function takes (cfg, tokenizer) and returns the prompts as a
sequence (len() and [i] -> np.ndarray of token ids). `demo`: the synthetic prompts of
hpc_rlhf/demo/task.py; `jsonl`: one {"prompt": "..."} per line of `task.prompts_path`, read below.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.plugins import load_callable

SOURCES = {
    "demo": "hpc_rlhf.demo.task:prompt_source",
    "jsonl": "hpc_rlhf.rollout.prompts:jsonl_source",
}


class PromptSet:
    """len() prompts; ps[i] -> int32 token ids of prompt i."""

    def __init__(self, cfg: Config, tok: PreTrainedTokenizerBase):
        source = load_callable(SOURCES[cfg.task.name], "task.name")
        self._items: Sequence[np.ndarray] = source(cfg, tok)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._items[i]


def jsonl_source(cfg: Config, tok: PreTrainedTokenizerBase) -> list[np.ndarray]:
    """The prompts of `task.prompts_path`, tokenized (no special tokens)."""
    return _read_jsonl(cfg.task.prompts_path, tok)  # type: ignore[arg-type]


def _read_jsonl(path: str, tok: PreTrainedTokenizerBase) -> list[np.ndarray]:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{n}: expected a JSON object with a 'prompt' string") from None
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise UserError(f"{path}:{n}: the prompt is empty after tokenization")
            out.append(np.asarray(ids, dtype=np.int32))
    if not out:
        raise UserError(f"{path}: no prompts found; one JSON object per line with a 'prompt' key")
    return out
