"""Preference pairs from a user's data file (the reward-model stage, `rm.pairs_path`).

    pairs = load_pairs(cfg, tok)      # rm.pairs_path: HDF5 token arrays or a table; None: the demo's own pairs
    pairs = table_pairs(tok, open_table(path, "rm.pairs_path"), path, chat=False)
    pairs = table_pairs(tok, table, path, chat=True, columns=PairColumns("question", "good", "bad"))
    pairs[i]["prompt"], pairs[i]["chosen"], pairs[i]["rejected"]     # int32 token id arrays

A row has the two answers as strings (columns `chosen` and `rejected` by default: rm.chosen_column,
rm.rejected_column) and its prompt (`prompt`: rm.prompt_column), a string or a list of chat messages
({role, content} dicts, the conversation before the answer); a table without the prompt column of the default
name but with a `messages` column takes that one. The prompt is rendered like a policy prompt (data/chat.py:
with chat=True the chat template and its generation prompt; a messages list needs it); each answer is its
text tokens + EOS, as the policy writes it. An HDF5 file holds flat token arrays
`prompt_tokens/chosen_tokens/rejected_tokens` and int64 `*_offsets` (n+1 each). Every bad row is a one-line
UserError naming file, row and fix.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import h5py
import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.data.chat import render_prompt, require_chat_template
from hpc_rlhf.data.tables import cell, open_table, require_columns
from hpc_rlhf.errors import UserError, first_line

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


def load_pairs(cfg: Config, tok: Any) -> list[dict] | None:
    """The preference pairs of `rm.pairs_path` (HDF5 token arrays, or a table); None for the demo task without a
    file (it synthesises its pairs from the gold rule: demo/task.py)."""
    path = cfg.rm.pairs_path
    if path is None:
        if cfg.task.name != "demo":
            raise UserError("rm.pairs_path is unset; give a JSONL, Parquet, CSV or HDF5 file of preference pairs")
        return None
    if path.endswith((".h5", ".hdf5")):
        return h5_pairs(path)
    if cfg.rm.chat_template:
        require_chat_template(
            tok, cfg.model.tokenizer_path or cfg.model.policy_path or "the tokenizer", "rm.chat_template"
        )
    columns = PairColumns(cfg.rm.prompt_column, cfg.rm.chosen_column, cfg.rm.rejected_column)
    return table_pairs(tok, open_table(path, "rm.pairs_path"), path, cfg.rm.chat_template, columns)


def h5_pairs(path: str) -> list[dict]:
    """The pairs of an HDF5 file of flat token arrays and offsets (see the module docstring)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            cols = {}
            for k in ("prompt", "chosen", "rejected"):
                if f"{k}_tokens" not in f or f"{k}_offsets" not in f:
                    raise UserError(f"{path}: needs datasets {k}_tokens and {k}_offsets (int64 offsets, n+1 each)")
                flat, off = f[f"{k}_tokens"][()], f[f"{k}_offsets"][()]
                cols[k] = [flat[off[i] : off[i + 1]] for i in range(len(off) - 1)]
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({first_line(e)}); fix or re-export it") from None
    pairs = [
        {"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(cols["prompt"], cols["chosen"], cols["rejected"])
    ]
    for i, p in enumerate(pairs):
        for k in ANSWERS:
            if len(p[k]) == 0:
                raise UserError(f"{path}: pair {i + 1}: {k} is empty; every pair needs two non-empty answers")
    if not pairs:
        raise UserError(f"{path}: no preference pairs found")
    return pairs
