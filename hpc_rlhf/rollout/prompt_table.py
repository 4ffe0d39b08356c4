"""The prompt source of `task.name=dataset`: the rows of a local file or folder, rendered to token ids.

    items = dataset_source(cfg, tok)     # what PromptSet(cfg, tok) holds for task.name=dataset
    items[i]                             # int32 token ids of kept prompt i (the global prompt index)
    items.labels[i], items.raw[i]        # its label (str or None), its prompt as written (str or messages)
    items.stats                          # {"data/prompts_total", "data/prompts_dropped", "data/prompts_truncated"}

The file is read by hpc_rlhf/data (JSONL, JSON, Parquet, CSV, TSV, a saved dataset folder). `task.prompt_column`
holds a string or a list of chat messages; `task.chat_template=true` renders either with the tokenizer's chat
template and its generation prompt, false tokenizes a string with the tokenizer's special tokens (BOS where it
adds one). A prompt longer than `task.max_prompt_tokens` is dropped (the prompt indices are those of the kept
rows, in file order) or keeps its last max_prompt_tokens tokens (`task.long_prompts=truncate_left`).
Every bad row is a one-line UserError naming the file, the row (from 1) and the fix; launch/prepare.py builds
the set before any rank starts or any job is queued, so a run never meets one.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.data.chat import check_messages, render_prompts, require_chat_template
from hpc_rlhf.data.tables import open_table, require_columns
from hpc_rlhf.errors import UserError

CHUNK = 4096  # prompts rendered and tokenized per batched call


class TablePrompts(list):
    """Kept prompts (int32 token id arrays) with `labels`, `raw` (one per prompt) and `stats`."""

    labels: list[Optional[str]]
    raw: list[Any]
    stats: dict[str, int]


def dataset_source(cfg: Config, tok: Any) -> TablePrompts:
    """The prompts of `task.prompts_path` (task.name=dataset), checked row by row."""
    t = cfg.task
    path = str(t.prompts_path)
    ds = open_table(path, "task.prompts_path")
    require_columns(ds, [t.prompt_column], path, "task.prompt_column")
    labels: list[Any] = [None] * len(ds)
    if t.label_column is not None:
        require_columns(ds, [t.label_column], path, "task.label_column")
        labels = ds.data.column(t.label_column).to_pylist()
    if t.chat_template:
        require_chat_template(tok, str(getattr(tok, "name_or_path", "the tokenizer")), "task.chat_template")
    column = ds.data.column(t.prompt_column).to_pylist()  # the Arrow column at once, not row by row
    for i, prompt in enumerate(column):  # every row, the ones a length limit drops too
        _check_prompt(prompt, f"{path}: row {i + 1}", t.prompt_column, t.chat_template)
        if t.label_column is not None:
            labels[i] = _label(labels[i], f"{path}: row {i + 1}", t.label_column)
    out = TablePrompts()
    out.labels, out.raw = [], []
    dropped = truncated = 0
    for start in range(0, len(column), CHUNK):  # the tokenizer's batched call
        chunk = column[start : start + CHUNK]
        for i, ids in enumerate(render_prompts(tok, chunk, t.chat_template), start):
            where = f"{path}: row {i + 1}"
            if not ids:
                raise UserError(f"{where}: the prompt is empty after tokenization; give it text or remove the row")
            if 0 < t.max_prompt_tokens < len(ids):
                if t.long_prompts == "drop":
                    dropped += 1
                    continue
                ids, truncated = ids[-t.max_prompt_tokens :], truncated + 1
            out.append(np.asarray(ids, dtype=np.int32))
            out.raw.append(column[i])
            out.labels.append(labels[i])
    if not out:
        raise UserError(
            f"{path}: all {len(ds)} prompts are longer than task.max_prompt_tokens={t.max_prompt_tokens} tokens; "
            "raise it or set task.long_prompts=truncate_left"
        )
    out.stats = {"data/prompts_total": len(ds), "data/prompts_dropped": dropped, "data/prompts_truncated": truncated}
    return out


def _check_prompt(prompt: Any, where: str, column: str, chat: bool) -> None:
    """A non-empty string, or a list of chat messages when the chat template is on."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserError(f"{where}: column {column!r} is empty; give every row a non-empty prompt or remove it")
        return
    if isinstance(prompt, list):
        if not chat:
            raise UserError(f"{where}: column {column!r} holds chat messages; set task.chat_template=true")
        check_messages(prompt, f"{where}: column {column!r}")
        return
    got = "empty (null)" if prompt is None else f"a {type(prompt).__name__}"
    raise UserError(f"{where}: column {column!r} is {got}; every row needs a prompt string or a list of chat messages")


def _label(value: Any, where: str, column: str) -> str:
    """A label as text: a non-empty string or a number."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    got = "empty" if value is None or isinstance(value, str) else f"a {type(value).__name__}"
    raise UserError(f"{where}: column {column!r} is {got}; every row needs a label (a string or a number)")
