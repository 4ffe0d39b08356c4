"""`show`: decoded text of chosen samples with the run's tokenizer, ids without one."""

from __future__ import annotations

import re
import shutil

import pytest
from archive_data import VOCAB

from hpc_rlhf.archive.cli import main

WORDS = {i: w for w, i in VOCAB.items()}


def _blocks(out: str) -> list[dict]:
    res = []
    for block in out.strip().split("\n\n"):
        head, prompt, response = block.splitlines()
        m = re.match(r"=== version (\d+)\s+step (\d+)\s+prompt (\d+)\s+sample (\d+)\s+reward (\S+)", head)
        assert m, head
        res.append(
            {
                "version": int(m.group(1)),
                "prompt_index": int(m.group(3)),
                "sample_index": int(m.group(4)),
                "reward": float(m.group(5)),
                "prompt": prompt.split(":", 1)[1].strip(),
                "response": response.split(":", 1)[1].strip(),
                "ids": "(ids)" in prompt,
            }
        )
    return res


def _text(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


def test_show_top_and_bottom_by_reward(archive, capsys):
    d, truth = archive
    by = {(s["prompt_index"], s["sample_index"]): s for s in truth}
    assert main(["show", d, "--version", "2", "--top", "3"]) == 0
    got = _blocks(capsys.readouterr().out)
    want = sorted((s for s in truth if s["policy_version"] == 2 and s["scored"]), key=lambda s: -s["reward"])[:3]
    assert [(g["prompt_index"], g["sample_index"]) for g in got] == [
        (s["prompt_index"], s["sample_index"]) for s in want
    ]
    for g in got:
        t = by[(g["prompt_index"], g["sample_index"])]
        assert not g["ids"]
        assert g["prompt"] == _text(t["prompt_tokens"])
        assert g["response"] == _text(t["response_tokens"])
        assert g["reward"] == pytest.approx(float(t["reward"]), abs=1e-3)

    assert main(["show", d, "--bottom", "2"]) == 0
    got = _blocks(capsys.readouterr().out)
    want = sorted((s for s in truth if s["scored"]), key=lambda s: s["reward"])[:2]
    assert [g["prompt_index"] for g in got] == [s["prompt_index"] for s in want]


def test_show_prompt_filter_limit_and_eos_visible(archive, capsys):
    d, truth = archive
    p = next(s["prompt_index"] for s in truth if s["eos"] and s["step"] == 3)
    assert main(["show", d, "--prompt", str(p), "--limit", "10"]) == 0
    got = _blocks(capsys.readouterr().out)
    want = [s for s in truth if s["prompt_index"] == p]
    assert sorted(g["sample_index"] for g in got) == sorted(s["sample_index"] for s in want)
    assert any(g["response"].endswith("</s>") for g in got)
    assert main(["show", d, "--limit", "4"]) == 0
    assert len(_blocks(capsys.readouterr().out)) == 4
    assert main(["show", d, "--version", "77"]) == 0
    assert "no samples match" in capsys.readouterr().out


def test_show_without_tokenizer_falls_back_to_ids(archive, tmp_path, capsys):
    d, truth = archive
    bare = tmp_path / "bare"
    shutil.copytree(f"{d}/rollouts", bare)
    assert main(["show", str(bare), "--top", "1"]) == 0
    cap = capsys.readouterr()
    (g,) = _blocks(cap.out)
    t = max((s for s in truth if s["scored"]), key=lambda s: s["reward"])
    assert g["ids"] and g["prompt"] == " ".join(map(str, t["prompt_tokens"]))
    assert g["response"] == " ".join(map(str, t["response_tokens"]))
    assert cap.err.count("\n") == 1 and "showing token ids" in cap.err
    # an explicit tokenizer folder works for a bare folder too
    assert main(["show", str(bare), "--top", "1", "--tokenizer", f"{d}/tokenizer"]) == 0
    (g,) = _blocks(capsys.readouterr().out)
    assert g["response"] == _text(t["response_tokens"])
