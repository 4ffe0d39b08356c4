"""Bad data for the SFT and reward-model stages is a one-line error naming the file, the row and the fix, raised
by run preparation (launch/prepare.py: what `sft`, `train-rm`, `submit` and `submit-recipe` run before any rank
starts or any job is queued)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import prepare_run
from tests.conftest import TINY, cli
from tests.stages.stage_data import demo_tokenizer, pair_rows, sft_rows, write_jsonl

SFT_CASES = {
    # name: (rows or raw text, extra overrides, expected message pieces)
    "missing column": ([{"prompt": "a"}], [], ["no column 'response'", "set sft.response_column"]),
    "empty field": (None, [], ["row 3: column 'response' is empty", "non-empty str"]),
    "not json": ('{"prompt": "a", "response": "b"}\n{"prompt": \n', [], [":2: not valid JSON"]),
    "no chat template": (None, ["sft.chat_template=true"], ["has no chat template", "sft.chat_template=false"]),
    "no assistant turn": (
        [{"messages": [{"role": "user", "content": "a"}]}],
        ["sft.chat_template=true", "sft.messages_column=messages"],
        ["row 1: the conversation has no assistant turn"],
    ),
}


def _sft_file(tmp_path, case: str):
    rows, _, _ = SFT_CASES[case]
    path = tmp_path / "sft.jsonl"
    if isinstance(rows, str):
        path.write_text(rows)
        return str(path)
    if rows is None:
        rows = sft_rows(4)
        if case == "empty field":
            rows[2]["response"] = ""
    return write_jsonl(path, rows)


@pytest.mark.parametrize("case", list(SFT_CASES))
def test_bad_sft_data_is_one_line_naming_file_and_row(tmp_path, case):
    path = _sft_file(tmp_path, case)
    tok = demo_tokenizer(tmp_path, chat=case == "no assistant turn")
    cfg = load_config(
        TINY,
        [f"run_dir={tmp_path}/run", "stage=sft", f"sft.data_path={path}", f"model.tokenizer_path={tok}"]
        + SFT_CASES[case][1],
    )
    with pytest.raises(UserError) as e:
        prepare_run(cfg)
    msg = str(e.value)
    assert "\n" not in msg and (path in msg or tok in msg), msg
    for piece in SFT_CASES[case][2]:
        assert piece in msg, msg


PAIR_CASES = {
    "missing column": ("jsonl", ["no column 'rejected'"]),
    "empty field": ("jsonl", ["row 2: column 'chosen' is empty"]),
    "not parquet": ("parquet", ["cannot be read as parquet", "re-export"]),
    "no chat template": ("jsonl", ["has no chat template", "rm.chat_template=false"]),
    "hdf5 without offsets": ("h5", ["needs datasets chosen_tokens and chosen_offsets"]),
}


@pytest.mark.parametrize("case", list(PAIR_CASES))
def test_bad_pairs_are_one_line_naming_file_and_row(tmp_path, case):
    kind, pieces = PAIR_CASES[case]
    path = tmp_path / f"pairs.{kind}"
    rows = pair_rows(4)
    if kind == "parquet":
        path.write_bytes(b"PAR1 this is not a parquet file")
    elif kind == "h5":
        with h5py.File(path, "w") as f:
            f["prompt_tokens"], f["prompt_offsets"] = np.arange(4), np.array([0, 2, 4])
    else:
        if case == "missing column":
            rows = [{k: v for k, v in r.items() if k != "rejected"} for r in rows]
        if case == "empty field":
            rows[1]["chosen"] = ""
        write_jsonl(path, rows)
    extra = ["rm.chat_template=true"] if case == "no chat template" else []
    tok = demo_tokenizer(tmp_path)
    cfg = load_config(
        TINY, [f"run_dir={tmp_path}/run", "stage=rm", f"rm.pairs_path={path}", f"model.tokenizer_path={tok}", *extra]
    )
    with pytest.raises(UserError) as e:
        prepare_run(cfg)
    msg = str(e.value)
    assert "\n" not in msg and (str(path) in msg or tok in msg), msg
    for piece in pieces:
        assert piece in msg, msg


def test_the_cli_prints_one_line_and_starts_no_rank(tmp_path):
    path = _sft_file(tmp_path, "empty field")
    run = tmp_path / "run"
    p = cli(
        "sft",
        TINY,
        f"run_dir={run}",
        f"sft.data_path={path}",
        f"model.tokenizer_path={demo_tokenizer(tmp_path)}",
        check=False,
    )
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert p.stderr.startswith(f"error: {path}: row 3: column 'response' is empty")
    assert not (run / "config.yaml").exists() and not (run / ".ranks").exists()
