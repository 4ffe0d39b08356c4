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


# -- task.name=dataset: any table format, columns, chat template, length limit -------------------------------


def _dataset_set(tmp_path, path: str, *extra: str) -> tuple[PromptSet, object]:
    from hpc_rlhf.models.build import load_tokenizer
    from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides

    tok_dir = chat_tokenizer(tmp_path / "chat_tok")
    cfg = load_config(TINY, [*dataset_overrides(path, tok_dir), *extra])
    tok = load_tokenizer(cfg)
    return PromptSet(cfg, tok), tok


def test_dataset_jsonl_and_parquet_render_the_chat_template_and_drop_long_prompts(tmp_path):
    from tests.rollout.prompt_files import N_KEPT, N_LONG, prompt_file, prompt_rows

    rows = [r for r in prompt_rows() if len(r["prompt"].split()) <= 6]  # the kept ones, in file order
    a, tok = _dataset_set(tmp_path, prompt_file(tmp_path / "p.jsonl"))  # text prompts
    b, _ = _dataset_set(tmp_path, prompt_file(tmp_path / "p.parquet"))  # the same as chat messages
    assert len(a) == len(b) == N_KEPT
    stats = {"data/prompts_total": N_KEPT + N_LONG, "data/prompts_dropped": N_LONG, "data/prompts_truncated": 0}
    assert a.stats == b.stats == stats
    bos = tok.bos_token_id
    for i in (0, 17, N_KEPT - 1):
        want = [bos, *tok(rows[i]["prompt"], add_special_tokens=False)["input_ids"], bos]  # turn + generation prompt
        assert a[i].dtype == np.int32 and a[i].tolist() == want and b[i].tolist() == want
        assert a.label(i) == b.label(i) == rows[i]["answer"]
    assert a.raw(0) == rows[0]["prompt"] and b.raw(0) == [{"role": "user", "content": rows[0]["prompt"]}]


def test_dataset_truncates_from_the_left_and_counts(tmp_path):
    from tests.rollout.prompt_files import prompt_file

    path = prompt_file(tmp_path / "p.jsonl")
    full, _ = _dataset_set(tmp_path, path, "task.max_prompt_tokens=0")
    cut, _ = _dataset_set(tmp_path, path, "task.max_prompt_tokens=5", "task.long_prompts=truncate_left")
    assert len(cut) == len(full) == 68
    assert all(cut[i].tolist() == full[i].tolist()[-5:] for i in range(len(full)))
    assert cut.stats["data/prompts_truncated"] == sum(len(full[i]) > 5 for i in range(len(full))) > 0


def test_dataset_plain_text_gets_the_tokenizers_special_tokens_in_csv_and_saved_folders(tmp_path):
    """Without the chat template a prompt is tokenized with the tokenizer's special tokens (its BOS here),
    unlike task.name=jsonl, which keeps 0.1.0's tokens (no special tokens)."""
    import datasets
    from tokenizers import processors

    from hpc_rlhf.demo.task import build_tokenizer

    tok = build_tokenizer(16, str(tmp_path / "tok"))
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 2)]
    )
    tok.save_pretrained(str(tmp_path / "tok"))
    w = words(16)
    (tmp_path / "p.csv").write_text(f"text,answer\n{w[0]} {w[1]},4\n{w[2]},x\n")
    datasets.Dataset.from_dict({"text": [f"{w[0]} {w[1]}"], "answer": [4]}).save_to_disk(str(tmp_path / "saved"))
    from hpc_rlhf.models.build import load_tokenizer

    for path in (tmp_path / "p.csv", tmp_path / "saved"):
        over = [f"task.prompts_path={path}", "task.prompt_column=text", "task.label_column=answer"]
        cfg = load_config(TINY, ["task.name=dataset", *over, f"model.tokenizer_path={tmp_path}/tok"])
        ps = PromptSet(cfg, load_tokenizer(cfg))
        assert ps[0].tolist() == [2, 4, 5] and ps.label(0) == "4" and ps.stats["data/prompts_dropped"] == 0


def test_the_example_overlay_reads_a_chat_dataset(tmp_path):
    """configs/dataset.yaml with the user's paths given: a Parquet file of chat messages, the chat template."""
    import os

    from hpc_rlhf.models.build import load_tokenizer
    from tests.conftest import REPO
    from tests.rollout.prompt_files import N_KEPT, chat_tokenizer, prompt_file

    over = [
        f"task.prompts_path={prompt_file(tmp_path / 'p.parquet')}",
        f"model.tokenizer_path={chat_tokenizer(tmp_path / 't')}",
    ]
    cfg = load_config(os.path.join(REPO, "configs", "dataset.yaml"), over)
    ps = PromptSet(cfg, load_tokenizer(cfg))
    assert len(ps) == N_KEPT + 4 and ps.stats["data/prompts_dropped"] == 0  # 512 tokens: nothing dropped
    assert ps[0][0] == ps[0][-1] == 2  # the template's <bos> turn ... <bos>
