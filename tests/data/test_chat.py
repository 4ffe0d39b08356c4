"""hpc_rlhf/data/chat.py: one prompt or many at once render to the same ids; a missing template is one line."""

import pytest

from hpc_rlhf.data.chat import render_prompt, render_prompts, require_chat_template
from hpc_rlhf.demo.task import build_tokenizer, words
from hpc_rlhf.errors import UserError
from tests.rollout.prompt_files import TEMPLATE


def test_batched_rendering_equals_one_by_one_with_and_without_the_template(tmp_path):
    tok = build_tokenizer(16, str(tmp_path / "tok"))
    with pytest.raises(UserError, match=r"tok: the tokenizer has no chat template.*set task.chat_template=false"):
        require_chat_template(tok, str(tmp_path / "tok"), "task.chat_template")
    tok.chat_template = TEMPLATE
    w = words(16)
    texts = [f"{w[0]} {w[1]}", w[2]]
    chats = [texts[0], [{"role": "system", "content": w[3]}, {"role": "user", "content": w[4]}]]
    assert render_prompts(tok, texts, chat=False) == [render_prompt(tok, t, False, "x") for t in texts]
    assert render_prompts(tok, chats, chat=True) == [render_prompt(tok, p, True, "x") for p in chats]
    assert render_prompt(tok, chats[1], True, "x") == [2, 7, 2, 8, 2]  # <bos> turn <bos> turn, generation <bos>
    with pytest.raises(UserError, match="row 2: a messages list needs the chat template"):
        render_prompt(tok, chats[1], False, "row 2")
