"""The run's prompt set, indexed by global prompt index: the demo's synthetic prompts or a JSONL file."""

from __future__ import annotations

import json

import numpy as np
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.demo.task import GoldTask
from hpc_rlhf.errors import UserError


class PromptSet:
    """len() prompts; ps[i] -> int32 token ids of prompt i."""

    def __init__(self, cfg: Config, tok: PreTrainedTokenizerBase):
        self.task: GoldTask | None = None
        if cfg.task.name == "demo":
            t = cfg.task
            self.task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
            self._n = t.num_prompts
            self._items: list[np.ndarray] | None = None
        else:
            self._items = _read_jsonl(cfg.task.prompts_path, tok)  # type: ignore[arg-type]
            self._n = len(self._items)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        if self._items is not None:
            return self._items[i]
        assert self.task is not None
        return self.task.prompt(int(i), "train")


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
