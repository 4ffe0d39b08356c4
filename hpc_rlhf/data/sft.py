"""SFT examples from a user's data file: token ids and a loss mask per row (the `sft:` config section).

    examples, dropped = load_examples(cfg, tok)          # sft.data_path, its columns, chat template, max_len
    examples, dropped = sft_examples(tok, table, path, prompt_column="prompt", response_column="response",
                                     messages_column=None, chat=False, max_len=512)
    examples[i].ids, examples[i].loss_mask    # int64 (T,), bool (T,): True on the tokens the loss is on

Prompt/response rows: ids = prompt + response + EOS, the loss on response + EOS. With chat=True the prompt is
rendered by the tokenizer's chat template with its generation prompt (data/chat.py), the response appended as
text tokens + EOS; with chat=False the prompt is its text tokens (with the tokenizer's BOS if it adds one).
Messages rows (`messages_column`): the whole conversation rendered by the chat template; the loss is on each
assistant turn, i.e. on the tokens the template adds between the conversation up to that turn with the
generation prompt and the conversation including it. Rows longer than max_len are cut at the end; a row with
no loss token left is dropped and counted. Every bad row is a one-line UserError naming file, row and fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.data.chat import check_messages, render_prompt, require_chat_template
from hpc_rlhf.data.tables import cell, open_table, require_columns
from hpc_rlhf.errors import UserError


@dataclass(frozen=True)
class Example:
    ids: np.ndarray
    """(T,) int64 token ids."""
    loss_mask: np.ndarray
    """(T,) bool: True on the tokens whose prediction is trained (response / assistant tokens)."""


def _template_ids(tok: Any, messages: list, generation_prompt: bool) -> list[int]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def _text_ids(tok: Any, text: str) -> list[int]:
    return [int(t) for t in tok(text, add_special_tokens=False)["input_ids"]]


def conversation_example(tok: Any, messages: list, where: str) -> Example:
    """A chat conversation with the loss on its assistant turns (see the module docstring)."""
    check_messages(messages, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: the conversation has no assistant turn to learn from; add one or drop the row")
    ids = _template_ids(tok, messages, False)
    mask = np.zeros(len(ids), dtype=bool)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template_ids(tok, messages[:k], True) if k else []
        upto = _template_ids(tok, messages[: k + 1], False)
        if ids[: len(upto)] != upto or upto[: len(before)] != before:
            raise UserError(
                f"{where}: the chat template does not render turn {k + 1} as a prefix of the conversation; "
                "use prompt/response columns (sft.messages_column unset) for this tokenizer"
            )
        mask[len(before) : len(upto)] = True
    return Example(np.asarray(ids, dtype=np.int64), mask)


def pair_example(tok: Any, prompt: str, response: str, chat: bool, where: str) -> Example:
    """prompt + response + EOS with the loss on response + EOS."""
    p = render_prompt(tok, prompt, chat, where)
    r = _text_ids(tok, response) + [int(tok.eos_token_id)]
    ids = np.asarray(p + r, dtype=np.int64)
    return Example(ids, np.arange(len(ids)) >= len(p))


def sft_examples(
    tok: Any,
    table: Any,
    path: str,
    prompt_column: str = "prompt",
    response_column: str = "response",
    messages_column: Optional[str] = None,
    chat: bool = False,
    max_len: int = 512,
) -> tuple[list[Example], int]:
    """Every row of `table` (a datasets.Dataset read from `path`) as an Example; (examples, rows dropped)."""
    if messages_column is not None:
        require_columns(table, [messages_column], path, what="sft.messages_column")
    else:
        require_columns(table, [prompt_column], path, what="sft.prompt_column")
        require_columns(table, [response_column], path, what="sft.response_column")
    out, dropped = [], 0
    for i in range(len(table)):
        where = f"{path}: row {i + 1}"
        if messages_column is not None:
            ex = conversation_example(tok, cell(table, i, messages_column, path, kind=list), where)
        else:
            prompt = cell(table, i, prompt_column, path, kind=str)
            ex = pair_example(tok, prompt, cell(table, i, response_column, path, kind=str), chat, where)
        ex = Example(ex.ids[:max_len], ex.loss_mask[:max_len])
        if not ex.loss_mask[1:].any():  # the first token is never predicted
            dropped += 1
            continue
        out.append(ex)
    if not out:
        raise UserError(f"{path}: no example keeps a response token within sft.max_len={max_len}; raise sft.max_len")
    return out, dropped


def load_examples(cfg: Config, tok: Any) -> tuple[list[Example], int]:
    """The SFT examples of `sft.data_path` and how many rows were dropped (one-line UserErrors on bad data)."""
    s = cfg.sft
    if s.chat_template:
        require_chat_template(
            tok, cfg.model.tokenizer_path or cfg.model.policy_path or "the tokenizer", "sft.chat_template"
        )
    table = open_table(s.data_path, "sft.data_path")
    return sft_examples(
        tok, table, s.data_path, s.prompt_column, s.response_column, s.messages_column, s.chat_template, s.max_len
    )
