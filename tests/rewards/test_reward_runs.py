"""Reward sources in real runs: the scorer with only a function builds no reward model; a PPO run on 1+1+1
ranks with the reward model (weight 1) and the demo's gold rule (weight 0.5) writes both values and their
weighted sum; a run with the gold rule alone and no reward model trains to the end."""

from __future__ import annotations

import glob
import json

import numpy as np
import pytest
import torch

from hpc_rlhf.config import load_config
from hpc_rlhf.demo.task import GOLD_REWARD, SPECIALS, task_of
from hpc_rlhf.models.build import build_reward, load_tokenizer
from hpc_rlhf.models.forward import make_batch, sequence_scores
from hpc_rlhf.rollout.plan import shard_path, shard_plan
from hpc_rlhf.rollout.prompts import PromptSet
from hpc_rlhf.rollout.shard import pack_ragged, read_shard, unpack_ragged, write_shard
from tests.conftest import TINY, cli

EOS = SPECIALS.index("<eos>")
GOLD_ONLY = f"reward.sources=[{{name: gold, kind: function, function: '{GOLD_REWARD}'}}]"
MIXED = f"reward.sources=[{{name: rm, kind: model}}, {{name: gold, kind: function, function: '{GOLD_REWARD}', weight: 0.5}}]"


def _gold(cfg, responses: list[np.ndarray]) -> np.ndarray:
    task = task_of(cfg)
    return np.array([task.gold_reward(r, EOS) for r in responses], dtype=np.float32)


def _generated_shard(cfg, run_dir: str, tok) -> str:
    """Shard 0 of step 0 as a generator writes it, with random responses (some ending in EOS)."""
    ps = PromptSet(cfg, tok)
    plan = shard_plan(cfg, len(ps), 0, 0)
    rng = np.random.default_rng(0)
    prompts = [ps[int(i)] for i in plan.prompt_indices]
    resp = [rng.integers(len(SPECIALS), len(tok), rng.integers(1, 6)).astype(np.int32) for _ in prompts]
    resp = [np.append(r, EOS).astype(np.int32) if k % 2 else r for k, r in enumerate(resp)]
    pt, po = pack_ragged(prompts, "int32")
    rt, ro = pack_ragged(resp, "int32")
    n = len(prompts)
    data = {
        "prompt_index": plan.prompt_indices, "sample_index": plan.sample_indices, "policy_version": np.zeros(n),
        "step": np.zeros(n), "seed": plan.seeds, "prompt_len": np.diff(po), "response_len": np.diff(ro),
        "eos": np.array([k % 2 for k in range(n)]), "prompt_offsets": po, "response_offsets": ro,
        "prompt_tokens": pt, "response_tokens": rt, "gen_logprobs": np.full(len(rt), -1.0),
    }  # fmt: skip
    attrs = {"kind": "generated", "step": 0, "shard_index": 0, "policy_version": 0, "num_samples": n}
    return write_shard(shard_path(run_dir, 0, 0, "generated"), data, {**attrs, "config_fingerprint": "x"})


def test_a_scorer_with_only_a_function_builds_no_reward_model(tiny_rm, tmp_path, monkeypatch):
    import hpc_rlhf.models.reward_scores as rm_mod
    import hpc_rlhf.roles.scorer as scorer_mod

    def no_rm(*a, **k):
        raise AssertionError("the reward model was built")

    monkeypatch.setattr(rm_mod, "build_reward", no_rm)
    tok_path = tiny_rm["overrides"][1]
    cfg = load_config(TINY, [tok_path, GOLD_ONLY, f"run_dir={tmp_path}"])
    assert cfg.model.reward_path is None
    sc = scorer_mod.Scorer(cfg, str(tmp_path), torch.device("cpu"), 0)
    assert sc.reward is None
    out, _, data = sc.score(_generated_shard(cfg, str(tmp_path), sc.tok))
    got, attrs = read_shard(out)
    assert attrs["reward_sources"] == ["gold"] and attrs["reward_weights"] == [1.0]
    gold = _gold(cfg, unpack_ragged(got["response_tokens"], got["response_offsets"]))
    assert got["reward_sources"][:, 0].tolist() == gold.tolist() and got["reward"].tolist() == gold.tolist()
    assert np.array_equal(got["group_id"], got["prompt_index"]) and len(got["ref_logprobs"]) == len(
        got["response_tokens"]
    )
    assert all(np.array_equal(got[k], data[k]) for k in got)  # what the single-rank loop hands on = the file


@pytest.mark.mpi
def test_a_ppo_run_with_the_model_and_a_function_keeps_both_values(tiny_rm, tmp_path, mpiexec):
    run = tmp_path / "run"
    cli("train", TINY, *tiny_rm["overrides"], MIXED, f"run_dir={run}", "total_steps=2")
    cfg = load_config(str(run / "config.yaml"))
    tok = load_tokenizer(cfg, str(run))
    rm = build_reward(cfg, tok)
    paths = sorted(glob.glob(f"{run}/rollouts/*/scored_*.h5"))
    assert len(paths) == 2 * cfg.generate.shards_per_step
    for p in paths:
        d, attrs = read_shard(p)
        assert attrs["reward_sources"] == ["rm", "gold"] and attrs["reward_weights"] == [1.0, 0.5]
        v = d["reward_sources"]
        responses = unpack_ragged(d["response_tokens"], d["response_offsets"])
        assert v[:, 1].tolist() == _gold(cfg, responses).tolist()
        for i in range(len(v)):  # plain loop: float64 sum in source order, stored as float32
            assert d["reward"][i] == np.float32(float(v[i, 0]) * 1.0 + float(v[i, 1]) * 0.5)
        prompts = unpack_ragged(d["prompt_tokens"], d["prompt_offsets"])
        with torch.no_grad():
            scores = sequence_scores(rm, make_batch(prompts, responses, tok.pad_token_id)).float().numpy()
        np.testing.assert_allclose(v[:, 0], scores, rtol=1e-5, atol=1e-6)  # the reward model's own score
        assert np.array_equal(d["group_id"], d["prompt_index"])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1]
    for m in lines:  # score/reward/NAME: each source's unweighted mean over the step's samples (plain loop)
        rows = [r for p in paths if f"step_{m['step']:06d}" in p for r in read_shard(p)[0]["reward_sources"]]
        for j, name in enumerate(["rm", "gold"]):
            assert m[f"score/reward/{name}"] == pytest.approx(sum(float(r[j]) for r in rows) / len(rows), abs=1e-9)
        assert m["score/reward_mean"] == pytest.approx(
            sum(float(r[0]) + 0.5 * float(r[1]) for r in rows) / len(rows), abs=1e-6
        )


@pytest.mark.mpi
def test_a_run_with_only_the_gold_rule_needs_no_reward_model(tiny_rm, tmp_path, mpiexec):
    run = tmp_path / "run"
    proc = cli("train", TINY, tiny_rm["overrides"][1], GOLD_ONLY, f"run_dir={run}", "total_steps=2")
    assert "warning" not in (proc.stdout + proc.stderr).lower()
    cfg = load_config(str(run / "config.yaml"))
    assert cfg.model.reward_path is None
    assert (run / "final" / "policy").is_dir()
    for p in sorted(glob.glob(f"{run}/rollouts/*/scored_*.h5")):
        d, attrs = read_shard(p)
        assert attrs["reward_sources"] == ["gold"]
        gold = _gold(cfg, unpack_ragged(d["response_tokens"], d["response_offsets"]))
        assert d["reward"].tolist() == gold.tolist() == d["reward_sources"][:, 0].tolist()
