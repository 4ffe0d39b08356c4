"""Preference pairs from a user's data file (the reward-model stage, `rm.pairs_path`).

    pairs = table_pairs(tok, open_table(path, "rm.pairs_path"), path, chat=False)
    pairs[i]["prompt"], pairs[i]["chosen"], pairs[i]["rejected"]     # int32 token id arrays

A row has `chosen` and `rejected` strings and either a `prompt` string or a `messages` list (chat format,
{role, content} dicts, the conversation before the answer). The prompt is rendered like a policy prompt
(data/chat.py: with chat=True the chat template and its generation prompt; a messages list needs it); each
answer is its text tokens + EOS, as the policy writes it. Every bad row is a one-line UserError naming file,
row and fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpc_rlhf.data.chat import render_prompt
from hpc_rlhf.data.tables import cell, require_columns
from hpc_rlhf.errors import UserError

ANSWERS = ("chosen", "rejected")


def table_pairs(tok: Any, table: Any, path: str, chat: bool) -> list[dict]:
    """The rows of `table` (read from `path`) as {prompt, chosen, rejected} token id arrays."""
    cols = table.column_names
    prompt_col = "messages" if "messages" in cols and "prompt" not in cols else "prompt"
    if prompt_col not in cols:
        raise UserError(f"{path}: no column 'prompt' or 'messages' (columns: {cols}); every pair needs its prompt")
    require_columns(table, list(ANSWERS), path, what="the pair columns (chosen, rejected)")
    eos = int(tok.eos_token_id)
    pairs = []
    for i in range(len(table)):
        where = f"{path}: row {i + 1}"
        prompt = cell(table, i, prompt_col, path, kind=list if prompt_col == "messages" else str)
        enc = {"prompt": np.asarray(render_prompt(tok, prompt, chat, where), dtype=np.int32)}
        for k in ANSWERS:
            ids = tok(cell(table, i, k, path, kind=str), add_special_tokens=False)["input_ids"]
            enc[k] = np.asarray([*ids, eos], dtype=np.int32)
        pairs.append(enc)
    return pairs
