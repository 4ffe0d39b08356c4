"""Bad prompt data is a one-line UserError naming the file, the row and the fix, raised by the run's preparation
(launch/prepare.py) before any rank starts, and by `hpc-rlhf submit` before any job is queued."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import build_tokenizer
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import prepare_run
from hpc_rlhf.rundir import RunDir
from tests.conftest import TINY, cli, need
from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file


def _jsonl(path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _case(tmp_path, name: str) -> list[str]:
    """The overrides of one bad case (on top of dataset_overrides)."""
    good = {"prompt": "ruke kofo", "answer": "a"}
    if name == "missing column":
        return [f"task.prompts_path={prompt_file(tmp_path / 'p.jsonl')}", "task.prompt_column=question"]
    if name == "empty prompt":
        return [f"task.prompts_path={_jsonl(tmp_path / 'p.jsonl', [good, good, {'prompt': ' ', 'answer': 'b'}])}"]
    if name == "missing label":
        return [f"task.prompts_path={_jsonl(tmp_path / 'p.jsonl', [good, {'prompt': 'ruke'}])}"]
    if name == "jsonl does not parse":
        return [f"task.prompts_path={_jsonl(tmp_path / 'p.jsonl', [good, '{oops'])}"]
    if name == "parquet does not parse":
        (tmp_path / "p.parquet").write_text("not parquet")
        return [f"task.prompts_path={tmp_path}/p.parquet", "task.prompt_column=messages"]
    if name == "no chat template":
        build_tokenizer(32, str(tmp_path / "plain_tok"))
        return [f"task.prompts_path={prompt_file(tmp_path / 'p.jsonl')}", f"model.tokenizer_path={tmp_path}/plain_tok"]
    if name == "messages without the chat template":
        return [
            f"task.prompts_path={prompt_file(tmp_path / 'p.parquet')}",
            "task.prompt_column=messages",
            "task.chat_template=false",
        ]
    assert name == "every prompt too long"
    return [f"task.prompts_path={prompt_file(tmp_path / 'p.jsonl')}", "task.max_prompt_tokens=2"]


# case -> what the one line must say (file, row where there is one, the fix)
CASES = {
    "missing column": ["p.jsonl", "no column 'question'", "set task.prompt_column"],
    "empty prompt": ["p.jsonl", "row 3", "column 'prompt' is empty", "non-empty prompt"],
    "missing label": ["p.jsonl", "row 2", "column 'answer' is empty", "needs a label"],
    "jsonl does not parse": ["p.jsonl:2", "not valid JSON", "one JSON object per line"],
    "parquet does not parse": ["p.parquet", "cannot be read as parquet", "re-export"],
    "no chat template": ["plain_tok", "no chat template", "set task.chat_template=false"],
    "messages without the chat template": ["p.parquet", "row 1", "holds chat messages", "task.chat_template=true"],
    "every prompt too long": ["p.jsonl", "task.max_prompt_tokens=2", "truncate_left"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_prompt_data_is_one_line_before_anything_runs(tmp_path, name):
    tok_dir = chat_tokenizer(tmp_path / "tok")
    over = [*dataset_overrides(str(tmp_path / "p.jsonl"), tok_dir), *_case(tmp_path, name)]
    cfg = load_config(TINY, [f"run_dir={tmp_path}/run", *over])
    with pytest.raises(UserError) as e:
        prepare_run(cfg)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for part in CASES[name]:
        assert part in msg, msg
    assert not os.path.exists(RunDir(str(tmp_path / "run")).config)  # no rank could have started


def test_submit_refuses_bad_data_before_queueing(tmp_path):
    """`hpc-rlhf submit`: the same line, exit 2, and no job: nothing reached sbatch."""
    need(shutil.which("sbatch") is not None and shutil.which("srun") is not None, "sbatch/srun (the dev Slurm cluster)")
    tok_dir = chat_tokenizer(tmp_path / "tok")
    over = [*dataset_overrides(str(tmp_path / "p.jsonl"), tok_dir), *_case(tmp_path, "empty prompt")]
    proc = cli("submit", TINY, f"run_dir={tmp_path}/run", *over, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("error: ") and "p.jsonl: row 3: column 'prompt' is empty" in err[0]
    rd = RunDir(str(tmp_path / "run"))
    assert not os.path.exists(rd.jobs) and not os.path.exists(rd.slurm)  # no submit event, no sbatch script
