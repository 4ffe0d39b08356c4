"""Bad input gives one line naming the key and the fix, exit 2, no traceback."""

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from tests.conftest import TINY, cli


@pytest.mark.parametrize(
    "override, words",
    [
        ("ppo.clip=0.1", ["ppo.clip", "clip_ratio"]),  # unknown key: lists valid ones
        ("seed=abc", ["seed", "abc"]),  # wrong type
        ("model.arch.model_type=bert", ["model.arch.model_type", "llama"]),  # bad choice lists valid ones
        ("model.policy_path=/no/such/folder", ["model.policy_path", "/no/such/folder"]),  # missing model folder
        ("ppo.minibatch_size=7", ["ppo.minibatch_size", "divide"]),
        ("layout.train=0", ["layout.train"]),
        ("layout.score=5", ["generate.shards_per_step", "idles"]),  # more scorers than shards
        ("checkpoint.sync_rollouts=sometimes", ["checkpoint.sync_rollouts", "every_shard"]),
        ("rm.pairs_path=/no/such/pairs.jsonl", ["rm.pairs_path", "/no/such/pairs.jsonl"]),  # checked at load
        ("rm.heldout_frac=1.0", ["rm.heldout_frac", "[0, 1)"]),
        ("task.name=dataset", ["task.prompts_path", "task.name=dataset"]),
        ("task.chat_template=true", ["task.chat_template", "task.name=dataset only"]),  # the demo has no template
        ("model.reward_tokenizer_path=configs", ["model.reward_tokenizer_path", "model.reward_path"]),
        ("model.lora.r=-1", ["model.lora.r", ">= 0"]),
        ("algo.dual_clip=0.5", ["algo.dual_clip", "> 1"]),
        ("train.max_tokens_per_microbatch=-1", ["train.max_tokens_per_microbatch", ">= 0"]),
    ],
)
def test_cli_bad_input_is_one_line(override, words, tmp_path):
    proc = cli("train", TINY, f"run_dir={tmp_path}/r", override, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in err[0]


def test_missing_config_file(tmp_path):
    proc = cli("train", str(tmp_path / "nope.yaml"), check=False)
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_overrides_and_types():
    cfg = load_config(TINY, ["seed=7", "layout.train=2", "ppo.kl.estimator=k3"])
    assert (cfg.seed, cfg.layout.train, cfg.ppo.kl.estimator) == (7, 2, "k3")
    assert cfg.generate.prompts_per_step == 8  # from the YAML
    with pytest.raises(ConfigError):
        load_config(TINY, ["ppo.kl.estimator=k2"])


def test_resume_refuses_changed_config(tmp_path, tiny_rm):
    run = f"run_dir={tmp_path}/r"
    cli("train", TINY, run, "total_steps=2", "runtime.launcher=none", *tiny_rm["overrides"])
    proc = cli(
        "train", TINY, run, "total_steps=2", "ppo.lr=0.1", "runtime.launcher=none", *tiny_rm["overrides"], check=False
    )
    assert proc.returncode == 2
    assert "ppo.lr: 0.0003 -> 0.1" in proc.stderr
    # a resume-safe key (total_steps) may change: the run continues from its checkpoint
    cli("train", TINY, run, "total_steps=3", "runtime.launcher=none", *tiny_rm["overrides"])


def test_configs_demo_yaml_spells_out_the_embedded_default():
    from hpc_rlhf.config import flatten, to_dict
    from hpc_rlhf.demo.task import with_gold_metric

    # `hpc-rlhf demo` runs on the schema defaults with its gold-reward step metric installed
    a, b = flatten(to_dict(with_gold_metric(load_config(None)))), flatten(to_dict(load_config("configs/demo.yaml")))
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_token_budget_with_fsdp_on_several_train_ranks_is_refused():
    with pytest.raises(ConfigError, match=r"train.max_tokens_per_microbatch.*train.sharding=none"):
        load_config(TINY, ["train.max_tokens_per_microbatch=512", "train.sharding=fsdp", "layout.train=2"])
    load_config(TINY, ["train.max_tokens_per_microbatch=512", "train.sharding=fsdp"])  # one train rank: fine


def test_overlong_filter_without_eos_is_refused():
    with pytest.raises(ConfigError, match=r"algo.overlong_filter.*generate.stop_at_eos=true"):
        load_config(TINY, ["algo.overlong_filter=true", "generate.stop_at_eos=false"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algo.dynamic_sampling=true"], r"algo.dynamic_sampling.*grpo or rloo"),  # tiny.yaml is PPO
        (
            ["algo.name=grpo", "algo.dynamic_sampling=true", "max_policy_lag=1"],
            r"algo.dynamic_sampling.*max_policy_lag=0",
        ),
        (["algo.max_refill_rounds=-1"], r"algo.max_refill_rounds.*>= 0"),
    ],
)
def test_dynamic_sampling_needs_groups_and_no_policy_lag(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY, overrides)
