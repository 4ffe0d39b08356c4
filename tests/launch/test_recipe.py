"""`hpc-rlhf submit-recipe`: each stage's output is the next stage's input, the dry run prints the three chained
sbatch scripts and writes nothing, and a bad stage config fails before anything is submitted (no Slurm needed;
the chain on the dev cluster: tests/launch/slurm/test_recipe_chain.py)."""

from __future__ import annotations

import io
import json

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError, UserError
from hpc_rlhf.launch.recipe import stage_configs, submit_recipe
from tests.conftest import TINY
from tests.stages.stage_data import demo_tokenizer, sft_jsonl


def _cfg(tmp_path, *more: str):
    return load_config(
        TINY, [f"run_dir={tmp_path}/recipe", f"sft.data_path={sft_jsonl(tmp_path / 'sft.jsonl')}", *more]
    )


def test_each_stage_takes_the_previous_stages_output(tmp_path):
    st = stage_configs(_cfg(tmp_path, "sft.ranks=2", "slurm.nodes=3"))
    root = f"{tmp_path}/recipe"
    assert [c.stage for c in st.values()] == ["sft", "rm", "rl"]
    assert [c.run_dir for c in st.values()] == [f"{root}/sft", f"{root}/rm", f"{root}/rl"]
    assert st["rm"].model.policy_path == st["rl"].model.policy_path == f"{root}/sft/final/policy"
    assert st["rm"].model.reward_path is None and st["rm"].rm.out_dir == f"{root}/rm/reward_model"
    assert st["rl"].model.reward_path == f"{root}/rm/reward_model"
    assert [c.world_size for c in st.values()] == [2, 1, 3]
    assert [c.slurm.nodes for c in st.values()] == [1, 1, 3]  # the supervised stages run on one node


def test_dry_run_prints_three_chained_scripts_and_writes_nothing(tmp_path):
    out = io.StringIO()
    jobs = submit_recipe(_cfg(tmp_path, "slurm.partition=low"), dry_run=True, out=out)
    text = out.getvalue()
    assert jobs == {"sft": None, "rm": None, "rl": None}
    scripts = text.split("# ---- stage ")[1:]
    assert [s.split(":")[0] for s in scripts] == ["sft", "rm", "rl"]
    assert all(s.count("#!/bin/bash") == 1 and "#SBATCH --partition=low" in s for s in scripts)
    assert "--dependency" not in scripts[0]
    assert "#SBATCH --dependency='afterok:<job id of sft>'" in scripts[1]
    assert "#SBATCH --dependency='afterok:<job id of rm>'" in scripts[2]
    assert all("#SBATCH --kill-on-invalid-dep=yes" in s for s in scripts[1:])
    assert "#SBATCH --ntasks-per-node=1" in scripts[0] and "#SBATCH --ntasks-per-node=3" in scripts[2]
    assert not (tmp_path / "recipe").exists()


def test_a_bad_stage_config_fails_before_anything_is_submitted(tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}/recipe"])  # no sft.data_path
    with pytest.raises(ConfigError, match="sft.data_path"):
        submit_recipe(cfg, dry_run=False, out=io.StringIO())
    assert not (tmp_path / "recipe").exists()


@pytest.mark.parametrize(
    "rows, more, error",
    [
        ([{"text": "a b"}], [], "no column 'prompt'"),  # the RL prompt file lacks its prompt column
        ([{"prompt": "a b"}], ["generate.max_new_tokens=100"], "generate.max_new_tokens=100"),  # over 64 positions
    ],
    ids=["prompt-column", "context"],
)
def test_a_bad_rl_stage_input_fails_before_anything_is_prepared_or_submitted(tmp_path, rows, more, error):
    """The RL stage's prompt file and context are read at submission, though its policy does not exist yet."""
    prompts = tmp_path / "rl_prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = demo_tokenizer(tmp_path)
    cfg = _cfg(tmp_path, f"model.tokenizer_path={tok}", "task.name=dataset", f"task.prompts_path={prompts}", *more)
    with pytest.raises(UserError, match=error) as e:
        submit_recipe(cfg, dry_run=False, out=io.StringIO())
    assert "\n" not in str(e.value)
    assert not (tmp_path / "recipe" / "sft" / "config.yaml").exists()  # no stage prepared, nothing queued
