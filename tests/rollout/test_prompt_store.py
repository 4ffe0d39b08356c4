"""The prompt set's identity: a checkpoint keeps the sha256 of the rendered prompts, and a resume on a prompt set
that differs (the file edited, or its tokenizer's chat template) is a one-line error before any rank starts."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hpc_rlhf.checkpoint.store import find_latest
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import prepare_run
from hpc_rlhf.rollout.prompt_store import FlatPrompts, prompt_set_sha256
from tests.conftest import TINY, cli
from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file

RUN = ["runtime.launcher=none", "total_steps=2", "checkpoint.every_steps=1", "logging.progress=false"]


def test_flat_prompts_hold_the_prompts_and_their_identity_covers_ids_order_labels_and_text():
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 50, int(rng.integers(1, 9))).astype(np.int32) for _ in range(20)]
    labels, raw = [str(i) for i in range(20)], [f"p{i}" for i in range(20)]
    flat = FlatPrompts.of(items, labels, raw)
    assert len(flat) == 20 and all(
        flat[i].dtype == np.int32 and flat[i].tolist() == items[i].tolist() for i in range(20)
    )
    assert flat.sha256 == prompt_set_sha256(flat) == FlatPrompts.of(list(items), labels, raw).sha256
    moved = [items[0][:-1], np.concatenate([items[0][-1:], items[1]]), *items[2:]]  # same ids, another boundary
    changed = {
        "order": FlatPrompts.of(items[::-1], labels[::-1], raw[::-1]),
        "boundary": FlatPrompts.of(moved, labels, raw),
        "a token": FlatPrompts.of([items[0] + 1, *items[1:]], labels, raw),
        "a label": FlatPrompts.of(items, ["x", *labels[1:]], raw),
        "the text": FlatPrompts.of(items, labels, ["q", *raw[1:]]),
        "no labels": FlatPrompts.of(items, None, raw),
    }
    for what, other in changed.items():
        assert other.sha256 != flat.sha256, what


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory):
    """A 2-step PPO run on a JSONL prompt file through the chat template, a checkpoint after each step."""
    base = tmp_path_factory.mktemp("prompt_set")
    tok_dir = chat_tokenizer(base / "tok")
    data = dataset_overrides(prompt_file(base / "p.jsonl"), tok_dir)
    cli("train", TINY, f"run_dir={base}/run", *data, *RUN)
    return base


def _edit_file(d) -> str:
    rows = [json.loads(x) for x in open(d / "p.jsonl")]
    rows[5]["prompt"] = rows[6]["prompt"]  # one prompt of the file changed
    (d / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "p.jsonl"


def _edit_template(d) -> str:
    path = d / "tok" / "chat_template.jinja"  # the folder's template: `<bos> turn ... <bos>`
    path.write_text(path.read_text().replace("<bos> {{", "<eos> {{"))
    return "tok/chat_template.jinja"


@pytest.mark.parametrize("edit", [_edit_file, _edit_template], ids=["file edited", "chat template changed"])
def test_a_resume_on_another_prompt_set_is_refused_in_one_line(dataset_run, edit):
    d, run = dataset_run, dataset_run / "run"
    saved = json.load(open(os.path.join(find_latest(str(run)).path, "state.json")))["data_cursor"]
    assert len(saved["prompt_set_sha256"]) == 64
    before = {
        f: (d / f).read_bytes() for f in ("p.jsonl", "tok/chat_template.jinja", "run/tokenizer/chat_template.jinja")
    }
    edited = edit(d)
    cfg = dataclasses.replace(load_config(str(run / "config.yaml"), ["total_steps=3"]), run_dir=str(run))
    try:
        with pytest.raises(UserError) as e:
            prepare_run(cfg)  # what `hpc-rlhf resume RUN_DIR` (and `submit`) do before any rank starts
    finally:
        (d / edited).write_bytes(before[edited])
    msg = str(e.value)
    assert "\n" not in msg and f"task.prompts_path '{d}/p.jsonl'" in msg and "no longer gives the prompt set" in msg
    assert "restore the file" in msg and "start a new run directory" in msg, msg
    assert len(open(run / "metrics.jsonl").readlines()) == 2  # no step ran
    assert (run / "tokenizer" / "chat_template.jinja").read_bytes() == before["run/tokenizer/chat_template.jinja"]


def test_a_rank_renders_a_missing_prompt_table_once_and_resumes_on_the_same_set(dataset_run, tmp_path):
    """A run dir without RUN_DIR/prompts.h5 (a recipe's RL stage, a run of an earlier version): the worker's rank 0
    renders it before the others read it; the resumed trainer finds the checkpoint's prompt set in it."""
    run = tmp_path / "run"
    shutil.copytree(dataset_run / "run", run)
    saved = open(run / "prompts.h5", "rb").read()
    os.unlink(run / "prompts.h5")
    text = (run / "config.yaml").read_text().replace("total_steps: 2", "total_steps: 3")
    (run / "config.yaml").write_text(text.replace(str(dataset_run / "run"), str(run)))
    proc = subprocess.run([sys.executable, "-m", "hpc_rlhf.launch.worker", str(run)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(open(run / "metrics.jsonl").readlines()) == 3
    with h5py.File(run / "prompts.h5") as a, h5py.File(io.BytesIO(saved)) as b:
        assert a.attrs["sha256"] == b.attrs["sha256"] and np.array_equal(a["ids"][()], b["ids"][()])
