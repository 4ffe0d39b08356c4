"""Any causal-LM decoder family: built from arch (llama, qwen2, gpt2) or loaded from a local folder."""

import json
import os

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import build_tokenizer
from hpc_rlhf.models.build import build_policy
from tests.conftest import TINY, cli


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_one_rank_run_per_family(tmp_path, family):
    run = tmp_path / "r"
    cli(
        "train",
        TINY,
        f"run_dir={run}",
        f"model.arch.model_type={family}",
        "total_steps=2",
        "runtime.launcher=none",
        "logging.tensorboard=true",
    )
    lines = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert [x["step"] for x in lines] == [0, 1]
    assert all(k in lines[0] for k in ("ppo/policy_loss", "gen/response_len_mean", "score/reward_mean", "time/step_s"))
    assert json.load(open(run / "final" / "policy" / "config.json"))["model_type"] == family
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tb"))


def test_policy_from_a_local_folder(tmp_path):
    cfg = load_config(TINY, ["model.arch.model_type=gpt2"])
    tok = build_tokenizer(cfg.task.vocab_words, str(tmp_path / "init"))
    build_policy(cfg, tok).save_pretrained(tmp_path / "init")
    run = tmp_path / "r"
    cli("train", TINY, f"run_dir={run}", f"model.policy_path={tmp_path}/init", "total_steps=1", "runtime.launcher=none")
    assert os.path.exists(run / "final" / "policy" / "model.safetensors")
    proc = cli("train", TINY, f"run_dir={tmp_path}/r2", f"model.policy_path={tmp_path}/tok_only_nope", check=False)
    assert proc.returncode == 2 and "model.policy_path" in proc.stderr
