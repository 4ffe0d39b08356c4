"""hpc_rlhf/data/tables.py: every format read in memory, and each bad file a one-line error naming file and row."""

import datasets
import pytest

from hpc_rlhf.data.tables import cell, open_table, require_columns
from hpc_rlhf.errors import UserError


def test_formats_and_bad_files(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"prompt":"hi","label":"3"}\n\n{"prompt":"yo"}\n')
    ds = open_table(str(p), "task.prompts_path")
    assert len(ds) == 2 and ds[1]["prompt"] == "yo"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"]}), tmp_path / "b.parquet")
    assert open_table(str(tmp_path / "b.parquet"), "x")[1]["prompt"] == "b"
    (tmp_path / "c.csv").write_text("prompt,label\nx,1\ny,2\n")
    assert open_table(str(tmp_path / "c.csv"), "x")[0]["prompt"] == "x"
    datasets.Dataset.from_dict({"prompt": ["q"]}).save_to_disk(str(tmp_path / "saved"))
    assert open_table(str(tmp_path / "saved"), "x")[0]["prompt"] == "q"
    (tmp_path / "bad.jsonl").write_text('{"prompt":"a"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        open_table(str(tmp_path / "bad.jsonl"), "x")
    with pytest.raises(UserError, match="no column 'text'"):
        require_columns(ds, ["text"], str(p), "task.prompt_column")
    (tmp_path / "e.jsonl").write_text('{"prompt":""}\n')
    with pytest.raises(UserError, match="row 1: column 'prompt' is empty"):
        cell(open_table(str(tmp_path / "e.jsonl"), "x"), 0, "prompt", "e.jsonl")
    (tmp_path / "bad.parquet").write_text("nope")
    with pytest.raises(UserError, match="cannot be read as parquet"):
        open_table(str(tmp_path / "bad.parquet"), "x")
