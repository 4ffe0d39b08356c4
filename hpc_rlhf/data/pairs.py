"""Preference pairs from a user's data file (the reward-model stage, `rm.pairs_path`).

    pairs = table_pairs(tok, open_table(path, "rm.pairs_path"), path, chat=False)
    pairs = table_pairs(tok, table, path, chat=True, columns=PairColumns("question", "good", "bad"))
    pairs[i]["prompt"], pairs[i]["chosen"], pairs[i]["rejected"]     # int32 token id arrays

A row has the two answers as strings (columns `chosen` and `rejected` by default: rm.chosen_column,
rm.rejected_column) and its prompt (`prompt`: rm.prompt_column), a string or a list of chat messages
({role, content} dicts, the conversation before the answer); a table without the prompt column of the default
name but with a `messages` column takes that one. The prompt is rendered like a policy prompt (data/chat.py:
with chat=True the chat template and its generation prompt; a messages list needs it); each answer is its
text tokens + EOS, as the policy writes it. Every bad row is a one-line UserError naming file, row and fix.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hpc_rlhf.data.chat import render_prompt
from hpc_rlhf.data.tables import cell, require_columns
from hpc_rlhf.errors import UserError

ANSWERS = ("chosen", "rejected")  # the keys of a pair's answers


class PairColumns(NamedTuple):
    """The table's column of each part of a pair (the config keys rm.prompt_column, rm.chosen_column,
    rm.rejected_column)."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"


DEFAULT_COLUMNS = PairColumns()


def table_pairs(tok: Any, table: Any, path: str, chat: bool, columns: PairColumns = DEFAULT_COLUMNS) -> list[dict]:
    """The rows of `table` (read from `path`) as {prompt, chosen, rejected} token id arrays."""
    cols = table.column_names
    prompt_col = columns.prompt
    if prompt_col not in cols and prompt_col == DEFAULT_COLUMNS.prompt and "messages" in cols:
        prompt_col = "messages"
    if prompt_col not in cols:
        raise UserError(
            f"{path}: no column {prompt_col!r} or 'messages' (columns: {cols}); every pair needs its prompt: "
            "set rm.prompt_column to one of them"
        )
    require_columns(table, [columns.chosen], path, what="rm.chosen_column")
    require_columns(table, [columns.rejected], path, what="rm.rejected_column")
    eos = int(tok.eos_token_id)
    pairs = []
    for i in range(len(table)):
        where = f"{path}: row {i + 1}"
        prompt = cell(table, i, prompt_col, path, kind=list if prompt_col == "messages" else (str, list))
        if isinstance(prompt, list) and not chat:
            raise UserError(f"{where}: column {prompt_col!r} holds chat messages; set rm.chat_template=true")
        enc = {"prompt": np.asarray(render_prompt(tok, prompt, chat, where), dtype=np.int32)}
        for k, column in zip(ANSWERS, (columns.chosen, columns.rejected)):
            ids = tok(cell(table, i, column, path, kind=str), add_special_tokens=False)["input_ids"]
            enc[k] = np.asarray([*ids, eos], dtype=np.int32)
        pairs.append(enc)
    return pairs
