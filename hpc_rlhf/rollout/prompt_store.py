"""A prompt set as the run uses it, held flat: its identity (sha256), compared on resume.

    flat = FlatPrompts.of(items, labels, raw, stats)   # a source's prompts -> one int32 array + offsets
    flat[i]                                            # int32 token ids of prompt i (a view)
    flat.sha256                                        # the prompt set's identity, computed once
    check_same_prompts(saved_sha, flat.sha256, checkpoint_path, "prompts.jsonl")   # UserError when they differ

The identity covers what the run reads of its prompts: each prompt's token ids after the chat template and the
length policy (dropped rows absent, truncated ones cut), their order, and the labels and as-written prompts
that reward functions and a re-encoding scorer see. A checkpoint keeps it with its data cursor
(checkpoint/train_state.py); a resume whose prompt set differs (the file was edited, or its tokenizer or chat
template renders it differently) is refused, since the plan's prompt indices would name other prompts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hpc_rlhf.errors import UserError

IDENTITY_VERSION = b"hpc-rlhf prompt set 1\n"  # a change of what the hash covers changes this tag


@dataclass
class FlatPrompts:
    """N prompts as one int32 array `ids` and int64 `offsets` (N + 1): prompt i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: Optional[list[Optional[str]]] = None
    """One per prompt (None: the source has none)."""
    raw: Optional[list[Any]] = None
    """The prompts as written, str or chat messages (None: the source keeps none)."""
    stats: dict[str, int] = field(default_factory=dict)
    sha256: str = ""
    """The identity, set by `of`."""

    @staticmethod
    def of(
        items: Sequence[np.ndarray],
        labels: Optional[Sequence[Optional[str]]] = None,
        raw: Optional[Sequence[Any]] = None,
        stats: Optional[dict[str, int]] = None,
    ) -> FlatPrompts:
        """The prompts of a source (a sequence of token id arrays), flattened, with their identity."""
        lengths = np.fromiter((len(x) for x in items), dtype=np.int64, count=len(items))
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate([np.asarray(x, dtype=np.int32) for x in items]) if len(items) else np.zeros(0, np.int32)
        flat = FlatPrompts(
            ids,
            offsets,
            None if labels is None else list(labels),
            None if raw is None else list(raw),
            dict(stats or {}),
        )
        flat.sha256 = prompt_set_sha256(flat)
        return flat

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def prompt_set_sha256(flat: FlatPrompts) -> str:
    """sha256 of the token ids with their boundaries, the labels and the prompts as written (see the docstring)."""
    h = hashlib.sha256(IDENTITY_VERSION)
    h.update(np.ascontiguousarray(flat.offsets, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(flat.ids, dtype="<i4").tobytes())
    for name, part in (("labels", flat.labels), ("raw", flat.raw)):
        h.update(f"\n{name}\n".encode())
        values = None if part is None else list(part)
        h.update(json.dumps(values, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()


def check_same_prompts(saved: Optional[str], current: Optional[str], checkpoint: str, prompts_path: Any) -> None:
    """A one-line UserError when checkpoint `checkpoint` was trained on another prompt set than the one
    `prompts_path` renders to now. Nothing to compare (a checkpoint of an earlier version, or a task
    without a prompt file) passes."""
    if not saved or not current or saved == current:
        return
    raise UserError(
        f"task.prompts_path '{prompts_path}' no longer gives the prompt set checkpoint '{checkpoint}' was trained on "
        f"(sha256 {saved[:12]} then, {current[:12]} now: the file, or the tokenizer or chat template rendering it, "
        "changed); restore the file as it was, or start a new run directory (run_dir=...)"
    )
