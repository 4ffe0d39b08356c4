"""hpc_rlhf/data/pairs.py through the rm stage's preparation: a pair table with its own column names
(rm.prompt_column, rm.chosen_column, rm.rejected_column) gives the pairs of the same table under today's names."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.data.pairs import load_pairs
from hpc_rlhf.errors import UserError
from hpc_rlhf.models.build import load_tokenizer
from tests.conftest import TINY
from tests.stages.stage_data import demo_tokenizer, pair_rows, write_jsonl

RENAMED = {"prompt": "question", "chosen": "better", "rejected": "worse"}


def _pairs(tmp_path, rows, *over):
    cfg = load_config(TINY, ["stage=rm", f"rm.pairs_path={write_jsonl(tmp_path / 'p.jsonl', rows)}", *over])
    return load_pairs(cfg, load_tokenizer(cfg))


@pytest.mark.parametrize("chat", [False, True])
def test_pair_columns_are_configurable_and_default_to_todays_names(tmp_path, chat):
    tok = demo_tokenizer(tmp_path, chat=chat)
    rows = pair_rows(6)
    if chat:  # the prompt as chat messages
        rows = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows]
    base = [f"model.tokenizer_path={tok}", f"rm.chat_template={str(chat).lower()}"]
    want = _pairs(tmp_path, rows, *base)
    renamed = [{RENAMED[k]: v for k, v in r.items()} for r in rows]
    keys = [f"rm.{k}_column={v}" for k, v in RENAMED.items()]
    got = _pairs(tmp_path, renamed, *base, *keys)
    assert len(got) == len(want) == 6
    for a, b in zip(got, want):
        assert all(np.array_equal(a[k], b[k]) for k in ("prompt", "chosen", "rejected"))
    with pytest.raises(UserError, match=r"p.jsonl: no column 'rejected' .*; set rm.rejected_column to one of them"):
        _pairs(tmp_path, renamed, *base, *keys[:2])  # rm.rejected_column left at 'rejected'
    with pytest.raises(UserError, match=r"no column 'prompt' or 'messages' .*set rm.prompt_column"):
        _pairs(tmp_path, renamed, *base)
    if chat:
        with pytest.raises(UserError, match=r"row 1: column 'question' holds chat messages; set rm.chat_template=true"):
            _pairs(tmp_path, renamed, *keys, f"model.tokenizer_path={tok}", "rm.chat_template=false")
