"""Any causal-LM decoder family: built from arch (llama, qwen2, gpt2) or loaded from a local folder."""

import json
import os

import pytest
import torch

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


@pytest.mark.mpi
def test_a_gpt_neox_folder_on_two_trainers_ends_as_on_one_rank(tmp_path, mpiexec):
    """A policy folder of a family on transformers' forward, its value model made from it (a seeded
    score head: every trainer starts from the same one), multi-rank against one rank."""
    from transformers import AutoModelForCausalLM

    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.signals import StopFlag
    from hpc_rlhf.launch.single import run_single
    from hpc_rlhf.rundir import RunDir
    from tests.models.test_families import family_config

    tok = build_tokenizer(load_config(TINY).task.vocab_words, str(tmp_path / "neox"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(family_config("gpt_neox", tok)).save_pretrained(tmp_path / "neox")
    common = [f"model.policy_path={tmp_path}/neox", "model.value_init=policy", "total_steps=1"]
    cfg, run_dir = prepare_run(load_config(TINY, [*common, f"run_dir={tmp_path}/one"]))
    assert run_single(cfg, run_dir, torch.device("cpu"), StopFlag()) == "done"  # one rank, in this process
    cli("train", TINY, f"run_dir={tmp_path}/many", *common, "layout.generate=1", "layout.score=1", "layout.train=2")
    # loaded as a user would: the single-rank export is save_pretrained's (transformers 5 writes gpt_neox's head
    # under its checkpoint name embed_out), the multi-rank one the published file (the module's name, lm_head)
    a, b = (
        AutoModelForCausalLM.from_pretrained(RunDir(f"{tmp_path}/{r}").final_policy).state_dict()
        for r in ("one", "many")
    )
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5  # the gradient-sum order only
