"""Reward sources: every bad reward function fails with one line naming it (at config load when it cannot
import or has the wrong signature; on the scoring rank, naming the sample, when its output is bad), the
weighted sum, and the built-in functions."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.rewards import RewardFunctionError, RewardSources, combine, reward_batch
from hpc_rlhf.rewards.builtin import (
    exact_match,
    exact_match_whole,
    extract_answer,
    normalize_answer,
    overlong_penalty,
)
from tests.conftest import TINY


def _sources(*fns: str, weights: tuple[float, ...] = ()) -> list[str]:
    items = [
        f"{{name: f{i}, kind: function, function: '{fn}', weight: {weights[i] if weights else 1.0}}}"
        for i, fn in enumerate(fns)
    ]
    return [f"reward.sources=[{', '.join(items)}]"]


def _batch(lengths=(2, 5, 1, 4)) -> object:
    resp = [np.arange(4, 4 + n, dtype=np.int32) for n in lengths]
    prompts = [np.array([4, 5], dtype=np.int32)] * len(lengths)
    pi = np.array([7, 7, 9, 9])[: len(lengths)]
    si = np.array([0, 1, 0, 1])[: len(lengths)]
    return reward_batch(None, prompts, resp, [None] * len(lengths), pi, si, "step 3 shard 1", text=False)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tests.rewards.nope:f", r"config key 'reward.sources\[0\].function': 'tests.rewards.nope:f': no module named"),
        (
            "tests.rewards.fns:nope",
            r"'reward.sources\[0\].function': 'tests.rewards.fns:nope': module .* has no 'nope'",
        ),
        (
            "tests.rewards.broken_module:f",
            r"'reward.sources\[0\].function': importing 'tests.rewards.broken_module:f' "
            r"failed: ImportError: no module named 'sympy_nonexistent'",
        ),  # fmt: skip
        (
            "tests.rewards.fns:too_few_args",
            r"'reward.sources\[0\].function': 'tests.rewards.fns:too_few_args' has "
            r"the signature \(prompts, responses\) but is called as \(prompts, responses, prompt_ids, response_ids, "
            r"labels\)",
        ),  # fmt: skip
        ("tests.rewards.fns:NOT_A_FUNCTION", r"'tests.rewards.fns:NOT_A_FUNCTION' names a int, not a function"),
        ("no_colon", r"'reward.sources\[0\].function': 'no_colon' is not of the form"),
    ],
)
def test_a_function_that_cannot_be_called_fails_at_config_load(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(TINY, _sources(spec))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override, match",
    [
        ("reward.sources=[]", r"'reward.sources': needs at least one source"),
        ("reward.sources=[{name: a}, {name: b}]", r"'reward.sources': at most one source of kind=model"),
        ("reward.sources=[{name: 'a b'}]", r"'reward.sources\[0\].name': 'a b' must be letters, digits and _"),
        (
            "reward.sources=[{name: a, kind: function, function: 'tests.rewards.fns:length'}, {name: a}]",
            r"'reward.sources\[0\].name': 'a' names two sources",
        ),  # fmt: skip
        ("reward.sources=[{name: a, kind: function}]", r"'reward.sources\[0\].function': must be 'package.module:"),
        (
            "reward.sources=[{name: a, function: 'tests.rewards.fns:length'}]",
            r"'reward.sources\[0\].function': must be unset for kind=model",
        ),  # fmt: skip
        ("reward.sources=[{name: a, weight: .inf}]", r"'reward.sources\[0\].weight': inf must be a finite number"),
        ("reward.sources=[{name: a, kind: rule}]", r"'reward.sources\[0\].kind': 'rule' is not one of model, function"),
        (
            "reward.sources=[{name: a, fn: x}]",
            r"'reward.sources\[i\].fn' is unknown; valid keys of a reward source: name",
        ),
    ],
)
def test_bad_sources_fail_at_config_load(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(TINY, [override])
    assert "\n" not in str(e.value)


HEAD = r"reward function 'tests.rewards.fns:{fn}' \(reward source 'f0'\) "


@pytest.mark.parametrize(
    "fn, match",
    [
        (
            "raises_on_long",
            r"raised ValueError: cannot score 5 tokens on sample \(prompt 7, sample 1\) of step 3 shard 1",
        ),
        ("raises_on_batches", r"raised RuntimeError: batch too large on the 4 samples of step 3 shard 1"),
        ("nan_on_second", r"returned nan for sample \(prompt 7, sample 1\) of step 3 shard 1; a reward function"),
        ("inf_on_first", r"returned inf for sample \(prompt 7, sample 0\) of step 3 shard 1"),
        ("one_short", r"returned 3 values for the 4 samples of step 3 shard 1"),
        ("text_on_third", r"returned 'good' \(str\), not a number, for sample \(prompt 9, sample 0\) of step 3"),
        ("scalar", r"returned a float, not a sequence of 4 numbers for step 3 shard 1"),
    ],
)
def test_a_bad_function_fails_the_scoring_with_one_line_naming_it_and_the_sample(fn, match):
    sources = RewardSources(load_config(TINY, _sources(f"tests.rewards.fns:{fn}")))
    with pytest.raises(RewardFunctionError, match=HEAD.format(fn=fn) + match) as e:
        sources.compute(None, _batch())
    assert "\n" not in str(e.value)


def test_weighted_sum_of_model_and_functions_and_the_cfg_keyword():
    cfg = load_config(
        TINY,
        [
            "seed=5",
            "reward.sources=[{name: rm, kind: model, weight: 1.0}, {name: len, kind: function, "
            "function: 'tests.rewards.fns:length', weight: 0.5}, {name: seed, kind: function, "
            "function: 'tests.rewards.fns:wants_cfg', weight: -2.0}]",
        ],
    )
    sources = RewardSources(cfg)
    assert sources.names == ["rm", "len", "seed"] and sources.weights == [1.0, 0.5, -2.0] and sources.needs_model
    model = np.array([0.1, -0.7, 3.25, 1e-3], dtype=np.float32)
    reward, values = sources.compute(model, _batch())
    assert values.dtype == np.float32 and values.shape == (4, 3)
    assert values[:, 0].tolist() == model.tolist() and values[:, 1].tolist() == [2, 5, 1, 4]
    assert values[:, 2].tolist() == [5.0] * 4  # the config's seed, passed as cfg=
    for i in range(4):  # plain loop: float64 sum in source order, then float32
        want = float(values[i, 0]) * 1.0 + float(values[i, 1]) * 0.5 + float(values[i, 2]) * -2.0
        assert reward[i] == np.float32(want)


def test_the_model_alone_at_weight_one_is_its_score_bit_for_bit():
    sources = RewardSources(load_config(TINY))
    assert sources.names == ["rm"] and sources.needs_model and not sources.needs_text
    rng = np.random.default_rng(0)
    model = rng.normal(size=1000).astype(np.float32) * np.float32(1e30)
    model[:3] = [np.float32(-0.0), np.float32(1e-45), np.float32(np.nan)]  # signed zero, subnormal, NaN kept
    reward, values = sources.compute(model, _big(1000))
    assert reward.tobytes() == model.tobytes() and values[:, 0].tobytes() == model.tobytes()
    assert combine(values, [1.0]).tobytes() == model.tobytes()


def _big(n: int):
    resp = [np.array([5], dtype=np.int32)] * n
    return reward_batch(None, resp, resp, [None] * n, np.arange(n), np.zeros(n), "step 0 shard 0", text=False)


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so the result is \\boxed{\\frac{1}{2}} and \\boxed{42}.", "42"),
        ("nested \\boxed{a{b}c} here", "a{b}c"),
        ("unclosed \\boxed{7} then \\boxed{8", "7"),
        ("work... #### 17", " 17"),
        ("x #### 1 #### 2", " 2"),
        ("Answer: Paris. answer:  London", "  London"),
        ("no marker at all", "no marker at all"),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_normalize_and_exact_match():
    assert normalize_answer("  The   Answer\tIS\n42.  ") == "the answer is 42"
    assert (
        normalize_answer("3.") == "3" and normalize_answer("3..") == "3." and normalize_answer("STRASSE") == "strasse"
    )
    responses = ["Thinking... #### 42.", "answer: paris", "\\boxed{ 7 }", "42", "#### 41"]
    labels = ["42", "Paris", "7", "42", "42"]
    none = [np.zeros(0)] * 5
    assert exact_match([""] * 5, responses, none, none, labels) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert exact_match_whole([""] * 5, responses, none, none, labels) == [0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="exact_match needs a label for every prompt"):
        exact_match([""], ["x"], none[:1], none[:1], [None])


def test_exact_match_without_labels_fails_naming_the_function_and_sample():
    sources = RewardSources(load_config(TINY, _sources("hpc_rlhf.rewards.builtin:exact_match")))
    with pytest.raises(RewardFunctionError, match=r"'hpc_rlhf.rewards.builtin:exact_match' .* raised ValueError: "
                       r"exact_match needs a label .* on sample \(prompt 7, sample 0\) of step 3 shard 1"):  # fmt: skip
        sources.compute(None, _batch())


def _plain_overlong(n: int, limit: int, buffer: int) -> float:
    """DAPO eq. 13 as written: 0, the linear ramp, or -1."""
    if n <= limit - buffer:
        return 0.0
    if n <= limit:
        return ((limit - buffer) - n) / buffer
    return -1.0


def test_soft_overlong_penalty_against_the_formula_and_as_a_reward_source():
    for limit, buffer in ((8, 2), (20, 4), (5, 5), (16, 1)):
        lengths = list(range(0, limit + 3))
        got = overlong_penalty(lengths, limit, buffer)
        assert got == pytest.approx([_plain_overlong(n, limit, buffer) for n in lengths], abs=1e-12)
        assert got[limit] == -1.0 and got[limit - buffer] == 0.0
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty([1], 8, 0)
    cfg = load_config(TINY, [*_sources("hpc_rlhf.rewards.builtin:soft_overlong"), "generate.max_new_tokens=10"])
    reward, values = RewardSources(cfg).compute(None, _batch((2, 8, 9, 10)))  # buffer round(10 / 5) = 2
    assert values[:, 0].tolist() == [0.0, 0.0, -0.5, -1.0] and reward.tolist() == [0.0, 0.0, -0.5, -1.0]


def test_the_random_reward_model_warning_names_the_algorithm(tmp_path, capsys):
    from hpc_rlhf.launch.prepare import prepare_run

    prepare_run(load_config(TINY, [f"run_dir={tmp_path}/a", "algo.name=grpo", "generate.samples_per_prompt=2"]))
    err = capsys.readouterr().err
    assert "grpo runs against a randomly initialised reward model" in err and "PPO" not in err
    prepare_run(load_config(TINY, [f"run_dir={tmp_path}/b", "algo.name=grpo", *_sources("tests.rewards.fns:length")]))
    assert "randomly initialised" not in capsys.readouterr().err  # no model source: no reward model at all
