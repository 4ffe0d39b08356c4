"""Evaluation during training, the pieces without a run: pass@k against a plain-loop reference, the eval
metrics of hand-made shards, the versions and seeds, the config checks, the eval line of metrics.jsonl
(written once, merged into its step by the readers, shown by `status`) and eval shards in the archive
(their own kind: verified, summarized apart). Real runs: tests/cluster/test_pipeline.py (layouts),
tests/checkpoint/test_ckpt_kill_resume.py (SIGKILL + resume), tests/launch/slurm/test_submit_resume.py."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from hpc_rlhf.archive import Archive
from hpc_rlhf.archive.summary import summarize, summarize_eval
from hpc_rlhf.archive.synthetic import make_archive
from hpc_rlhf.archive.verify import verify
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.monitor.metrics import read_metrics
from hpc_rlhf.monitor.progress import progress_lines, run_progress
from hpc_rlhf.roles.evaluator import eval_metrics, eval_seed, eval_versions, pass_at_k, pass_ks
from hpc_rlhf.roles.metrics_log import MetricsLog
from hpc_rlhf.rollout.plan import sample_seed
from hpc_rlhf.rollout.shard import normalize, pack_ragged, write_shard
from hpc_rlhf.rundir import RunDir
from tests.conftest import TINY, TINY_TASK, cli, tiny_eval


def pass_at_k_loop(n: int, c: int, k: int) -> float:
    """The share of the k-subsets of n samples (c of them correct) that hold at least one correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(pass_at_k_loop(n, c, k), abs=1e-12), (n, c, k)
    assert pass_at_k(4, 1, 1) == 0.25 and pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    assert pass_ks(1) == [1] and pass_ks(6) == [1, 2, 4] and pass_ks(8) == [1, 2, 4, 8]
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def _part(prompts: list[int], values: list[list[float]], lens: list[int]) -> dict[str, np.ndarray]:
    v = np.asarray(values, dtype=np.float32)
    return {
        "prompt_index": np.asarray(prompts, dtype=np.int64),
        "reward_sources": v,
        "reward": v[:, 0] + 0.5 * v[:, 1],
        "response_len": np.asarray(lens, dtype=np.int32),
    }


def test_eval_metrics_are_means_over_samples_and_pass_at_k_over_prompts():
    gold = "{name: gold, kind: function, function: 'hpc_rlhf.demo.task:gold_reward'}"
    over = "{name: over, kind: function, function: 'hpc_rlhf.rewards.builtin:soft_overlong', weight: 0.5}"
    cfg = load_config(TINY, [*tiny_eval(2), f"eval.sources=[{gold}, {over}]", "eval.samples_per_prompt=2"])
    # prompt 0: 1 of 2 correct; prompt 1 (split over two shards): 0 of 2; prompt 2: 2 of 2
    parts = [
        _part([0, 0, 1], [[1, 0], [0, -1], [0, 0]], [2, 4, 6]),
        _part([1, 2, 2], [[-1, 0], [2, 0], [1, 0]], [8, 1, 3]),
    ]
    m = eval_metrics(cfg, parts)
    rng = random.Random(0)
    rng.shuffle(parts)  # the order of the shards does not matter
    assert eval_metrics(cfg, parts) == m
    assert m["eval/reward/gold"] == pytest.approx(0.5) and m["eval/reward/over"] == pytest.approx(-1 / 6)
    assert m["eval/reward_mean"] == pytest.approx(0.5 - 0.5 / 6)
    assert m["eval/response_len_mean"] == pytest.approx(4.0)
    assert m["eval/pass_at_1"] == pytest.approx((0.5 + 0 + 1) / 3) and m["eval/pass_at_2"] == pytest.approx(2 / 3)
    assert "eval/pass_at_4" not in m


def test_versions_and_seeds_come_from_the_config_and_the_identity_only():
    assert eval_versions(load_config(TINY, tiny_eval(2))) == [2, 4]  # the final version (4) too
    assert eval_versions(load_config(TINY, [*tiny_eval(3), "total_steps=10"])) == [3, 6, 9]
    assert eval_versions(load_config(TINY)) == []  # off by default
    assert eval_seed(1, 2, 3, 4) == eval_seed(1, 2, 3, 4) != eval_seed(1, 2, 3, 5)
    assert eval_seed(1, 2, 3, 4) != sample_seed(1, 2, 2, 3, 4)  # never a training sample's seed


@pytest.mark.parametrize(
    "over, match",
    [
        (["eval.every=2", f"eval.task={TINY_TASK}"], r"'eval.sources': needs at least one reward function"),
        (["eval.every=-1"], r"'eval.every': must be >= 0"),
        ([*tiny_eval(2), "eval.pass_source=nope"], r"'eval.pass_source': 'nope' is not one of the eval sources"),
        (
            [*tiny_eval(2), "eval.sources=[{name: a, kind: model}, {name: b, kind: model}]"],
            r"'eval.sources': at most one",
        ),
        ([*tiny_eval(2), "eval.temperature=0"], r"'eval.samples_per_prompt': must be 1 with eval.temperature=0"),
        ([*tiny_eval(2), "eval.task={name: demo, vocab_words: 96}"], r"'eval.task.vocab_words': must be task"),
        ([*tiny_eval(2), "eval.task={name: jsonl}"], r"'eval.task.prompts_path': must be set"),
        ([*tiny_eval(2), "eval.task={name: jsonl, prompts_path: /no/such.jsonl}"], r"'eval.task.prompts_path': path"),
    ],
)
def test_bad_eval_settings_fail_at_load_in_one_line(over, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(TINY, over)
    assert "\n" not in str(e.value)


def test_an_eval_line_is_written_once_and_joins_its_step(tmp_path):
    cfg = load_config(TINY, [f"run_dir={tmp_path}"])
    log = MetricsLog(cfg, str(tmp_path), 0)
    for step in range(3):
        log.write(step, {"score/reward_mean": float(step), "gen/response_len_mean": 5.0})
    log.write_eval(1, {"eval/reward_mean": 0.25, "eval/pass_at_1": 0.5})
    log.close()
    log = MetricsLog(cfg, str(tmp_path), 2)  # a resume at step 2: step 2 is cut, the eval of step 1 kept
    log.write_eval(1, {"eval/reward_mean": 0.25, "eval/pass_at_1": 0.5})  # evaluated again: not written twice
    log.write(2, {"score/reward_mean": 2.0})
    log.close()
    lines = [json.loads(x) for x in open(RunDir(str(tmp_path)).metrics)]
    assert [x["step"] for x in lines] == [0, 1, 1, 2]
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[1]["score/reward_mean"] == 1.0 and rows[1]["eval/pass_at_1"] == 0.5 and "time_unix" in rows[1]
    shown = "\n".join(progress_lines(run_progress(str(tmp_path))))
    assert "eval:       step 1: reward_mean 0.25, pass_at_1 0.5" in shown, shown


def _eval_shard(path: str, version: int, rewards: list[float]) -> None:
    n = len(rewards)
    prompts = [np.array([5, 6], dtype=np.int32)] * n
    responses = [np.array([7, 8, 9][: i % 3 + 1], dtype=np.int32) for i in range(n)]
    pt, po = pack_ragged(prompts, "int32")
    rt, ro = pack_ragged(responses, "int32")
    data = {
        "prompt_index": np.arange(n) // 2,
        "sample_index": np.arange(n) % 2,
        "policy_version": np.full(n, version),
        "step": np.full(n, version - 1),
        "seed": np.arange(n),
        "prompt_len": np.diff(po),
        "response_len": np.diff(ro),
        "eos": np.zeros(n),
        "prompt_offsets": po,
        "response_offsets": ro,
        "prompt_tokens": pt,
        "response_tokens": rt,
        "gen_logprobs": np.zeros(len(rt)),
        "reward": np.asarray(rewards),
        "reward_sources": np.asarray(rewards)[:, None],
    }
    attrs = {"kind": "eval", "step": version - 1, "shard_index": 0, "policy_version": version, "num_samples": n}
    write_shard(path, normalize(data, "eval"), {**attrs, "reward_sources": ["gold"], "reward_weights": [1.0]})


def test_eval_shards_are_verified_and_summarized_apart_from_the_rollouts(tmp_path):
    """A small synthetic run (archive/synthetic.py) plus two evaluations."""
    archive_run = tmp_path / "run"
    make_archive(str(archive_run), steps=2, shards_per_step=1, samples_per_shard=8)
    rd = RunDir(str(archive_run))
    before = summarize(Archive.open(str(archive_run)))
    _eval_shard(rd.eval_shard(1, 0), 2, [0.0, 1.0, 1.0, 1.0])
    _eval_shard(rd.eval_shard(3, 0), 4, [1.0, 1.0])
    arc = Archive.open(str(archive_run))
    assert summarize(arc) == before  # the training rollouts' summary is untouched
    rep = verify(arc)
    assert rep.ok and sum("/evals/" in p for p in rep.good) == 2, rep.problems
    rows = summarize_eval(arc)
    assert [(r["policy_version"], r["step"], r["samples"]) for r in rows] == [(2, 1, 4), (4, 3, 2)]
    assert rows[0]["reward/gold"] == 0.75 and rows[1]["reward_mean"] == 1.0


def test_eval_prompts_too_long_for_the_context_fail_before_the_run_starts(tmp_path, tiny_rm):
    run = tmp_path / "run"
    got = cli(
        "train", TINY, f"run_dir={run}", *tiny_rm["overrides"], *tiny_eval(2), "eval.max_new_tokens=80", check=False
    )
    assert got.returncode != 0 and "eval.max_new_tokens=80 = 85 tokens do not fit" in got.stderr, got.stderr
    assert not (run / "config.yaml").exists() and not (run / "rollouts").exists()
