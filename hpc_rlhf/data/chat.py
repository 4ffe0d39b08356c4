"""Rendering a prompt (plain text or chat messages) to token ids, with the tokenizer's chat template when asked.

    ids = render_prompt(tok, "What is 2+2?", chat=True, where="prompts.jsonl: row 3")
    ids = render_prompt(tok, [{"role": "user", "content": "Hi"}], chat=True, where=...)
    ids_list = render_prompts(tok, prompts, chat=True)      # many checked prompts at once: the same ids, faster

chat=True applies `tok.apply_chat_template(messages, add_generation_prompt=True)`: the template adds what the model
was trained to see (BOS, role headers) and the header of the assistant turn the policy then writes. A plain string
becomes one user message. chat=False tokenizes the text as it is, with the tokenizer's special tokens (BOS where
the tokenizer adds one); messages then need a template, and their absence of one is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from hpc_rlhf.errors import UserError

Messages = list[dict[str, Any]]


def check_messages(messages: Any, where: str) -> Messages:
    """`messages` as a list of {"role": str, "content": str} dicts, or a one-line error at `where`."""
    ok = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    if not ok:
        raise UserError(f"{where}: messages must be a non-empty list of {{'role': str, 'content': str}} objects")
    return messages


def has_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


def require_chat_template(tok: Any, tokenizer_dir: str, key: str) -> None:
    """One-line error when a chat template is asked for (config key `key`) and the tokenizer has none."""
    if not has_chat_template(tok):
        raise UserError(
            f"{tokenizer_dir}: the tokenizer has no chat template, but {key} asks for one; "
            f"add 'chat_template' to its tokenizer_config.json or set {key}=false"
        )


def render_prompt(tok: Any, prompt: Union[str, Messages], chat: bool, where: str) -> list[int]:
    """Token ids of `prompt` (text or messages) for generation; chat=True applies the chat template."""
    if chat:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt, where)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    if not isinstance(prompt, str):
        raise UserError(f"{where}: a messages list needs the chat template; set the chat option to true")
    return [int(t) for t in tok(prompt, add_special_tokens=True)["input_ids"]]


def render_prompts(tok: Any, prompts: Sequence[Union[str, Messages]], chat: bool) -> list[list[int]]:
    """render_prompt of many prompts (already checked: strings, or messages when chat) in one batched call of
    the tokenizer: the same ids (apply_chat_template tokenizes its rendered text without special tokens)."""
    if chat:
        convs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    else:
        texts = list(prompts)
    if not texts:
        return []
    return [[int(t) for t in ids] for ids in tok(texts, add_special_tokens=not chat)["input_ids"]]
