"""RUN_DIR/prompts.h5: the prompt file rendered once by `prepare`; every rank reads the very same prompt set from it
(ids, labels, text, counts, identity) without opening the prompt file, and one rendered for other keys is not read."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.launch.prepare import prepare_run
from hpc_rlhf.models.build import load_tokenizer
from hpc_rlhf.rollout.prompt_file import read_prompts
from hpc_rlhf.rollout.prompt_store import prompt_set_sha256
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rundir import RunDir
from tests.conftest import TINY
from tests.rollout.prompt_files import N_KEPT, chat_tokenizer, dataset_overrides, prompt_file


def _jsonl_task(path) -> str:
    """task.name=jsonl: {"prompt", "label"} lines, a label on some only."""
    rows = [{"prompt": "ruke kofo", "label": "a"}, {"prompt": "kofo"}, {"prompt": "ruke ruke kofo", "label": 7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CASES = {
    "dataset jsonl text": lambda d, tok: dataset_overrides(prompt_file(d / "p.jsonl"), tok),
    "dataset parquet messages": lambda d, tok: dataset_overrides(prompt_file(d / "p.parquet"), tok),
    "jsonl task": lambda d, tok: [
        "task.name=jsonl",
        f"task.prompts_path={_jsonl_task(d / 'q.jsonl')}",
        f"model.tokenizer_path={tok}",
        "logging.step_metrics=[]",
    ],  # fmt: skip
}


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_read_the_prepared_set_and_never_the_prompt_file(tmp_path, case):
    over = CASES[case](tmp_path, chat_tokenizer(tmp_path / "tok"))
    cfg, run_dir = prepare_run(load_config(TINY, [f"run_dir={tmp_path}/run", *over]))
    tok = load_tokenizer(cfg, run_dir)
    src = PromptSet(cfg, tok)  # rendered from the prompt file, as every rank did before
    assert os.path.exists(RunDir(run_dir).prompts)
    os.rename(cfg.task.prompts_path, f"{cfg.task.prompts_path}.gone")  # a rank must not need it
    got = PromptSet(cfg, tok, run_dir)
    assert len(got) == len(src) and got.stats == src.stats and got.sha256 == src.sha256
    flat = got.flat()
    assert flat is not None and prompt_set_sha256(flat) == src.sha256  # what was stored is what it names
    for i in range(len(src)):
        assert got[i].dtype == src[i].dtype == np.int32 and np.array_equal(got[i], src[i])
        assert got.label(i) == src.label(i) and got.raw(i) == src.raw(i)
    if case.startswith("dataset"):
        assert len(got) == N_KEPT and got.label(0) is not None and got.raw(0) is not None
    else:
        assert [got.label(i) for i in range(3)] == ["a", None, "7"] and got.raw(0) is None


def test_a_file_rendered_for_other_keys_or_another_tokenizer_is_not_read(tmp_path):
    over = dataset_overrides(prompt_file(tmp_path / "p.jsonl"), chat_tokenizer(tmp_path / "tok"))
    cfg, run_dir = prepare_run(load_config(TINY, [f"run_dir={tmp_path}/run", *over]))
    assert read_prompts(run_dir, cfg) is not None
    for change in ("task.max_prompt_tokens=0", f"model.tokenizer_path={chat_tokenizer(tmp_path / 'tok2')}"):
        other = load_config(TINY, [f"run_dir={run_dir}", *over, change])
        assert read_prompts(run_dir, other) is None, change  # its ranks render the prompt file themselves
    with h5py.File(RunDir(run_dir).prompts) as f:
        assert f["ids"].dtype == np.int32 and f["offsets"].dtype == np.int64 and len(f["offsets"]) == N_KEPT + 1
        assert f.attrs["sha256"] == PromptSet(cfg, load_tokenizer(cfg, run_dir)).sha256
