"""The run's prompt set, indexed by global prompt index, from the source `task.name` names.

    ps = PromptSet(cfg, tok)                # PromptSet(cfg, tok, run_dir): RUN_DIR/prompts.h5 when it is there
    len(ps); ps[i]            # -> int32 token ids of prompt i
    ps.label(i)               # -> prompt i's label (a str), or None when the source has none
    ps.raw(i)                 # -> prompt i as written (text or chat messages), or None when the source keeps none
    ps.stats                  # -> the source's counts for metrics.jsonl ({} for demo and jsonl)
    ps.sha256                 # -> the prompt set's identity (rollout/prompt_store.py); None for demo

A source is registered here by name as a 'module:function' string and imported on first use, so
this package imports no task: the function takes (cfg, tokenizer) and returns the prompts as a
sequence (len() and [i] -> np.ndarray of token ids), optionally with an attribute `labels` (a
sequence of str or None, one per prompt: what reward functions check answers against), `raw` (the
prompts as written) and `stats` (a dict of counts logged with every step's metrics).
`demo`: the synthetic prompts of hpc_rlhf/demo/task.py (no labels); `jsonl`: one
{"prompt": "...", "label": "..."} per line of `task.prompts_path` ("label" optional: a string or a
number, kept as its text), read below and tokenized without special tokens (as since 0.1.0);
`dataset`: any table format with configurable columns, chat template and length limit (prompt_table.py).
The order of prompts within a pass is the plan's (rollout/plan.py: a permutation of (seed, pass) only).
The prompts of a source that reads `task.prompts_path` (FILE_SOURCES) are held flat, with their sha256,
which checkpoints keep: a resume on another prompt set is refused (rollout/prompt_store.py). The launcher
writes them once to RUN_DIR/prompts.h5 (rollout/prompt_file.py), and the ranks read that file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from transformers import PreTrainedTokenizerBase

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.plugins import load_callable
from hpc_rlhf.rollout.prompt_file import read_prompts
from hpc_rlhf.rollout.prompt_store import FlatPrompts

SOURCES = {
    "demo": "hpc_rlhf.demo.task:prompt_source",
    "jsonl": "hpc_rlhf.rollout.prompts:jsonl_source",
    "dataset": "hpc_rlhf.rollout.prompt_table:dataset_source",
}
FILE_SOURCES = ("jsonl", "dataset")  # sources that read task.prompts_path: their prompt set has an identity


class PromptSet:
    """len() prompts; ps[i] -> int32 token ids of prompt i; ps.label(i) -> its label or None."""

    def __init__(self, cfg: Config, tok: PreTrainedTokenizerBase, run_dir: Optional[str] = None):
        """run_dir: read the set RUN_DIR/prompts.h5 holds (rollout/prompt_file.py) when it was rendered for
        `cfg`, instead of rendering the prompt file again (what every rank does)."""
        file_source = cfg.task.name in FILE_SOURCES
        stored = read_prompts(run_dir, cfg) if file_source and run_dir is not None else None
        if stored is not None:
            items: Sequence[np.ndarray] = stored
        else:
            items = load_callable(SOURCES[cfg.task.name], "task.name")(cfg, tok)
        labels = getattr(items, "labels", None)
        raw = getattr(items, "raw", None)
        stats = dict(getattr(items, "stats", {}))
        self.sha256: Optional[str] = None
        if file_source:
            items = stored if stored is not None else FlatPrompts.of(items, labels, raw, stats)
            self.sha256 = items.sha256
        self._items = items
        self._labels: Optional[Sequence[Optional[str]]] = labels
        self._raw: Optional[Sequence[Any]] = raw
        self.stats: dict[str, int] = stats

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._items[i]

    def flat(self) -> Optional[FlatPrompts]:
        """The prompts of a prompt file, flat (what RUN_DIR/prompts.h5 holds); None for other sources."""
        return self._items if isinstance(self._items, FlatPrompts) else None

    def longest(self) -> int:
        """Tokens of the longest prompt."""
        if isinstance(self._items, FlatPrompts):
            return int(np.diff(self._items.offsets).max(initial=0))
        return max((len(self._items[i]) for i in range(len(self))), default=0)

    def label(self, i: int) -> Optional[str]:
        return None if self._labels is None else self._labels[i]

    def raw(self, i: int) -> Any:
        return None if self._raw is None else self._raw[i]


class LabelledPrompts(list):
    """A list of prompts (token id arrays) with `labels`, one str or None per prompt."""

    labels: list[Optional[str]]


def jsonl_source(cfg: Config, tok: PreTrainedTokenizerBase) -> LabelledPrompts:
    """The prompts of `task.prompts_path`, tokenized (no special tokens), with their labels."""
    return _read_jsonl(cfg.task.prompts_path, tok)  # type: ignore[arg-type]


def _label(obj: dict, where: str) -> Optional[str]:
    lab: Any = obj.get("label")
    if lab is None or isinstance(lab, str):
        return lab
    if isinstance(lab, (int, float)) and not isinstance(lab, bool):
        return str(lab)
    raise UserError(f"{where}: 'label' must be a string or a number, got {type(lab).__name__}")


def _read_jsonl(path: str, tok: PreTrainedTokenizerBase) -> LabelledPrompts:
    out, labels = LabelledPrompts(), []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{n}: expected a JSON object with a 'prompt' string") from None
            labels.append(_label(obj, f"{path}:{n}"))
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise UserError(f"{path}:{n}: the prompt is empty after tokenization")
            out.append(np.asarray(ids, dtype=np.int32))
    if not out:
        raise UserError(f"{path}: no prompts found; one JSON object per line with a 'prompt' key")
    out.labels = labels
    return out
