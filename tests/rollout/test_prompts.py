"""The JSONL prompt source: prompts tokenized, optional labels kept (what reward functions check against)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import build_tokenizer, words
from hpc_rlhf.errors import UserError
from hpc_rlhf.rollout.prompts import PromptSet
from tests.conftest import TINY


def _prompt_set(tmp_path, lines: list) -> PromptSet:
    tok = build_tokenizer(16, str(tmp_path / "tok"))
    path = tmp_path / "p.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    cfg = load_config(TINY, ["task.name=jsonl", f"task.prompts_path={path}"])
    return PromptSet(cfg, tok)


def test_labels_are_kept_as_text_and_none_where_absent(tmp_path):
    w = words(16)
    ps = _prompt_set(
        tmp_path, [{"prompt": f"{w[0]} {w[1]}", "label": "42"}, "", {"prompt": w[2]}, {"prompt": w[3], "label": 7}]
    )
    assert len(ps) == 3
    assert [ps.label(i) for i in range(3)] == ["42", None, "7"]
    assert ps[0].dtype == np.int32 and len(ps[0]) == 2


def test_a_label_that_is_not_text_or_a_number_is_refused(tmp_path):
    w = words(16)
    with pytest.raises(UserError, match=r"p.jsonl:2: 'label' must be a string or a number, got list"):
        _prompt_set(tmp_path, [{"prompt": w[0]}, {"prompt": w[1], "label": [1, 2]}])


def test_the_demo_has_no_labels(tmp_path):
    cfg = load_config(TINY)
    tok = build_tokenizer(cfg.task.vocab_words, str(tmp_path / "tok"))
    ps = PromptSet(dataclasses.replace(cfg), tok)
    assert ps.label(0) is None and ps.label(len(ps) - 1) is None
