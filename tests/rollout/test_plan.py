"""The plan: prompts once per pass, shards partition a step, seeds from identity only."""

import numpy as np

from hpc_rlhf.cluster.topology import Topology
from hpc_rlhf.config import load_config
from hpc_rlhf.rollout.plan import behaviour_version, sample_seed, shard_plan, step_prompts
from tests.conftest import TINY


def test_each_prompt_once_per_pass():
    n, per = 50, 8
    seen = np.concatenate([step_prompts(3, n, per, s) for s in range(25)])  # 200 = 4 passes
    for p in range(4):
        assert sorted(seen[p * n : (p + 1) * n]) == list(range(n))
    assert not np.array_equal(seen[:n], seen[n : 2 * n])  # a new permutation each pass
    # a function of (seed, pass) alone: any step computed alone (a resume) draws the same prompts; seeds differ
    assert np.array_equal(step_prompts(3, n, per, 13), seen[13 * per : 14 * per])
    assert not np.array_equal(step_prompts(4, n, per, 0), seen[:per])


def test_shards_partition_the_step_and_seeds_are_identity_derived():
    cfg = load_config(TINY)
    plans = [shard_plan(cfg, 64, 5, j) for j in range(cfg.generate.shards_per_step)]
    pi = np.concatenate([p.prompt_indices for p in plans])
    assert sorted(set(pi)) == sorted(step_prompts(cfg.seed, 64, cfg.generate.prompts_per_step, 5))
    assert len(pi) == cfg.generate.prompts_per_step * cfg.generate.samples_per_prompt
    p = plans[1]
    assert p.seeds[0] == sample_seed(cfg.seed, 5, 5, int(p.prompt_indices[0]), int(p.sample_indices[0]))
    assert len(set(np.concatenate([q.seeds for q in plans]))) == len(pi)


def test_behaviour_version_and_topology():
    assert [behaviour_version(s, 2) for s in range(5)] == [0, 0, 0, 1, 2]
    cfg = load_config(TINY, ["layout.generate=2", "layout.score=1", "layout.train=2"])
    t = Topology.build(5, cfg.layout)
    assert (t.generate, t.score, t.train, t.trainer0) == ((0, 1), (2,), (3, 4), 3)
    assert [t.role(r) for r in range(5)] == ["generate", "generate", "score", "train", "train"]
    assert [t.generator_rank(j) for j in range(4)] == [0, 1, 0, 1]
    assert Topology.build(1, cfg.layout).role(0) == "all"
    try:
        Topology.build(4, cfg.layout)
        raise AssertionError("expected ConfigError")
    except Exception as e:
        assert "4" in str(e) and "5" in str(e)
