"""The longest sequence of a run against each model's context (models/context.py): a one-line UserError from the
run's preparation naming the keys and the model folder, before any rank starts."""

from __future__ import annotations

import os

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch.prepare import prepare_run
from hpc_rlhf.models.context import context_limit
from hpc_rlhf.rundir import RunDir
from tests.conftest import TINY
from tests.rewards.test_reward_runs import GOLD_REWARD as GOLD
from tests.rollout.prompt_files import chat_tokenizer, dataset_overrides, prompt_file
from tests.stages.stage_data import sft_jsonl

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """A llama policy of 32 positions (with the chat tokenizer), a gpt2 reward model of 20 (n_positions)."""
    root = tmp_path_factory.mktemp("context")
    tok = chat_tokenizer(root / "policy")
    from transformers import AutoTokenizer

    n = len(AutoTokenizer.from_pretrained(tok))
    AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", vocab_size=n, max_position_embeddings=32, **SMALL)).save_pretrained(root / "policy")  # fmt: skip
    gpt2 = AutoConfig.for_model("gpt2", vocab_size=n, n_embd=16, n_layer=1, n_head=2, n_positions=20, num_labels=1)
    AutoModelForSequenceClassification.from_config(gpt2).save_pretrained(root / "rm")  # no tokenizer: the policy's
    return {"root": root, "policy": str(root / "policy"), "rm": str(root / "rm")}


def test_the_limit_is_read_under_the_familys_name(folders):
    assert context_limit(folders["policy"]) == ("max_position_embeddings", 32)
    assert context_limit(folders["rm"]) == ("n_positions", 20)


def _case(folders, name: str) -> tuple[list[str], list[str]]:
    """(overrides, what the one line must say) of one case."""
    root, pol, rm = folders["root"], folders["policy"], folders["rm"]
    data = dataset_overrides(prompt_file(root / "p.jsonl"), pol)  # task.max_prompt_tokens=8, rows of 4..11 tokens
    if name == "prompt limit + new tokens > the policy folder":
        over = [*data, f"model.policy_path={pol}", "generate.max_new_tokens=25", "model.value_init=policy"]
        return over, [
            "task.max_prompt_tokens=8 + generate.max_new_tokens=25 = 33 tokens",
            f"'{pol}'",
            "(max_position_embeddings=32)",
            "lower them",
        ]
    if name == "the longest prompt + new tokens > the reward folder":
        over = [*data, "task.max_prompt_tokens=0", f"model.policy_path={pol}", f"model.reward_path={rm}"]
        over += ["generate.max_new_tokens=12", "model.value_init=policy"]
        want = ["the longest prompt of task.prompts_path (11 tokens) + generate.max_new_tokens=12 = 23 tokens"]
        return over, [*want, f"model.reward_path '{rm}' (n_positions=20)", "set task.max_prompt_tokens"]
    if name == "demo prompts + new tokens > model.arch":
        want = ["task.prompt_len_max=6 + generate.max_new_tokens=59 = 65 tokens", "the model built from model.arch"]
        return ["generate.max_new_tokens=59"], [*want, "(model.arch.max_position=64)", "raise model.arch.max_position"]
    assert name == "an SFT example > model.arch"
    over = ["stage=sft", f"sft.data_path={sft_jsonl(root / 'sft.jsonl', 8)}", "model.arch.max_position=8"]
    return over, ["the longest SFT example (sft.max_len=512 cuts longer ones) =", "model.arch.max_position=8"]


CASES = [
    "prompt limit + new tokens > the policy folder",
    "the longest prompt + new tokens > the reward folder",
    "demo prompts + new tokens > model.arch",
    "an SFT example > model.arch",
]


@pytest.mark.parametrize("name", CASES)
def test_a_run_longer_than_a_models_context_is_one_line_before_anything_runs(folders, tmp_path, name):
    over, want = _case(folders, name)
    with pytest.raises(UserError) as e:
        prepare_run(load_config(TINY, [f"run_dir={tmp_path}/run", *over]))
    msg = str(e.value)
    assert "\n" not in msg and "do not fit" in msg, msg
    for part in want:
        assert part in msg, msg
    assert not os.path.exists(RunDir(str(tmp_path / "run")).config)  # no rank could have started


def test_a_run_that_fits_exactly_is_prepared(folders, tmp_path):
    over, _ = _case(folders, CASES[0])
    cfg, run_dir = prepare_run(load_config(TINY, [f"run_dir={tmp_path}/run", *over, "generate.max_new_tokens=24"]))
    assert os.path.exists(RunDir(run_dir).config)


def test_a_value_model_started_from_the_reward_model_is_checked_for_every_estimator_with_a_critic(tmp_path):
    """Whether the value model starts from the reward model follows the estimator's registration (critic=True),
    not the name 'ppo': a user's estimator with a critic is checked as PPO is; a critic-free one has no value model."""
    from hpc_rlhf.models.context import run_models

    rm = str(tmp_path)  # a folder that exists (the config checks it); nothing is loaded from it
    for name, critic in [
        ("ppo", True),
        ("tests.roles.toy_estimator:toy_critic_advantages", True),
        ("grpo", False),
        ("tests.roles.toy_estimator:toy_advantages", False),
    ]:
        over = [f"algo.name={name}", f"model.reward_path={rm}", "model.value_init=reward"]
        cfg = load_config(TINY, [*over, f"reward.sources=[{{name: gold, kind: function, function: '{GOLD}'}}]"])
        assert (("model.reward_path", rm) in run_models(cfg, True)) == critic, name
