"""Functions named in the config (plugins.load_callable): the step-metric hooks of logging.step_metrics
and the prompt sources of task.name, and the demo's gold-reward metric installed as such a hook."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GOLD_METRIC, GoldTask, gold_reward_metric, with_gold_metric
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.plugins import load_callable
from hpc_rlhf.roles.metrics_log import StepMetricHooks
from hpc_rlhf.rollout.prompts import PromptSet
from tests.conftest import REPO, TINY


class _Tok:
    eos_token_id = 1


def test_load_callable_finds_a_function_and_names_key_and_spec_when_it_cannot():
    assert load_callable(GOLD_METRIC, "logging.step_metrics") is gold_reward_metric
    assert load_callable("os.path:join", "k")("a", "b") == "a/b"
    for spec, words in [
        ("hpc_rlhf.no_such_module:f", ["no module named 'hpc_rlhf.no_such_module'"]),
        ("hpc_rlhf.demo.task:no_such_function", ["module 'hpc_rlhf.demo.task' has no 'no_such_function'"]),
        ("hpc_rlhf.demo.task", ["not of the form 'package.module:function'"]),
        ("hpc_rlhf.demo.task:SPECIALS", ["names a list, not a function"]),
    ]:
        with pytest.raises(ConfigError) as e:
            load_callable(spec, "logging.step_metrics")
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and "logging.step_metrics" in msg and spec in msg, msg
        for w in words:
            assert w in msg


def test_step_metric_hooks_call_each_function_with_the_responses():
    cfg = load_config(TINY)
    assert cfg.logging.step_metrics == [GOLD_METRIC]
    t = cfg.task
    task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
    rng = np.random.default_rng(0)
    responses = [task.random_response(rng, 8, 1) for _ in range(16)]
    got = StepMetricHooks(cfg, _Tok())(responses)
    assert got == {"gen/gold_reward_mean": float(np.mean([task.gold_reward(r, 1) for r in responses]))}
    assert StepMetricHooks(load_config(TINY, ["logging.step_metrics=[]"]), _Tok())(responses) == {}
    with pytest.raises(ConfigError, match="logging.step_metrics"):
        StepMetricHooks(load_config(TINY, ["logging.step_metrics=[nowhere:f]"]), _Tok())


def test_the_demo_installs_its_gold_metric_once_and_logging_keys_leave_the_fingerprint_alone():
    from hpc_rlhf.config import fingerprint

    cfg = load_config(None)
    assert cfg.logging.step_metrics == []
    demo = with_gold_metric(cfg)
    assert demo.logging.step_metrics == [GOLD_METRIC] and cfg.logging.step_metrics == []
    assert with_gold_metric(demo) is demo
    assert fingerprint(demo) == fingerprint(cfg)


def test_prompt_sources_are_found_by_name_and_the_rollout_package_imports_no_demo(tmp_path):
    cfg = load_config(TINY)
    t = cfg.task
    ps = PromptSet(cfg, _Tok())
    task = GoldTask(cfg.seed, t.vocab_words, t.prompt_len_min, t.prompt_len_max)
    assert len(ps) == t.num_prompts
    assert all(np.array_equal(ps[np.int64(i)], task.prompt(i, "train")) for i in (0, 5, t.num_prompts - 1))
    code = (
        "import sys, hpc_rlhf.rollout.prompts, hpc_rlhf.roles.trainer_loop; print('hpc_rlhf.demo.task' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_the_jsonl_prompt_source_reads_and_tokenizes_each_line(tmp_path):
    import json

    from hpc_rlhf.demo.task import build_tokenizer, words

    tok = build_tokenizer(32, str(tmp_path / "tok"))
    vocab = words(32)
    texts = [" ".join(vocab[i : i + 3]) for i in range(5)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    cfg = load_config(TINY, ["task.name=jsonl", f"task.prompts_path={tmp_path}/p.jsonl"])
    ps = PromptSet(cfg, tok)
    assert len(ps) == 5
    assert ps[2].dtype == np.int32 and tok.decode(ps[2]) == texts[2]
