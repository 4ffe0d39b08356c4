"""Placement of the role groups on the nodes (cluster/topology.py), against a brute-force reference: every
assignment of ranks to roles, feasible exactly when the reference finds one."""

from __future__ import annotations

import itertools
import random

import pytest

from hpc_rlhf.cluster.topology import ROLES, Topology
from hpc_rlhf.config import LayoutConfig, PlacementConfig
from hpc_rlhf.errors import ConfigError


def _brute_force_feasible(layout: LayoutConfig, placement: PlacementConfig, nodes: list[int]) -> bool:
    """Some assignment of the ranks to the roles meets group sizes and placement (a plain loop)."""
    labels = [r for r in ROLES for _ in range(getattr(layout, r))]
    for perm in set(itertools.permutations(labels)):
        if all(placement.nodes(role) is None or nodes[rank] in placement.nodes(role) for rank, role in enumerate(perm)):
            return True
    return False


def test_without_placement_the_blocks_are_kept():
    layout = LayoutConfig(2, 1, 2)
    blocks = Topology.build(5, layout)
    assert (blocks.generate, blocks.score, blocks.train) == ((0, 1), (2,), (3, 4))
    assert Topology.build(5, layout, PlacementConfig(), [0, 0, 1, 1, 1]) == blocks
    # blocks that already meet the placement are kept as they are
    assert Topology.build(5, layout, PlacementConfig(train="1"), [0, 0, 1, 1, 1]) == blocks


def test_generation_and_training_on_different_nodes():
    # 2 nodes x 2 tasks, layout 1+1+2, training on node 0, generation on node 1
    t = Topology.build(4, LayoutConfig(1, 1, 2), PlacementConfig(generate="1", train="0"), [0, 0, 1, 1])
    assert (t.generate, t.score, t.train, t.trainer0) == ((2,), (3,), (0, 1), 0)
    assert [t.role(r) for r in range(4)] == ["train", "train", "generate", "score"]
    assert [t.index(r) for r in range(4)] == [0, 1, 0, 0]


def test_unmet_placement_is_a_one_line_error_naming_the_allocation():
    with pytest.raises(ConfigError) as e:
        Topology.build(4, LayoutConfig(1, 1, 2), PlacementConfig(generate="0", score="0", train="0"), [0, 0, 1, 1])
    msg = str(e.value)
    assert "\n" not in msg and "node 0: ranks 0-1" in msg and "placement.train=0 (2 ranks)" in msg
    with pytest.raises(ConfigError, match="names node 2 but the job has 2 node"):
        Topology.build(4, LayoutConfig(1, 1, 2), PlacementConfig(train="2"), [0, 0, 1, 1])


@pytest.mark.parametrize("seed", range(3))
def test_placement_matches_a_brute_force_reference(seed):
    rng = random.Random(seed)
    choices = ["any", "0", "1", "2", "0,1", "1,2", "0,2"]
    for _ in range(60):
        layout = LayoutConfig(*(rng.randint(1, 3) for _ in ROLES))
        world = layout.world_size
        n_nodes = rng.randint(1, 3)
        nodes = sorted(rng.randrange(n_nodes) for _ in range(world))  # block distribution: non-decreasing
        nodes = [sorted(set(nodes)).index(n) for n in nodes]  # node indices 0..k-1, as at start-up
        placement = PlacementConfig(*(rng.choice(choices) for _ in ROLES))
        expected = _brute_force_feasible(layout, placement, nodes) and all(
            placement.nodes(r) is None or max(placement.nodes(r)) <= max(nodes) for r in ROLES
        )
        try:
            t = Topology.build(world, layout, placement, nodes)
        except ConfigError:
            assert not expected, (layout, placement, nodes)
            continue
        assert expected, (layout, placement, nodes)
        assert sorted(t.generate + t.score + t.train) == list(range(world))
        for r in ROLES:
            group = getattr(t, r)
            assert len(group) == getattr(layout, r) and list(group) == sorted(group)
            assert placement.nodes(r) is None or {nodes[x] for x in group} <= set(placement.nodes(r))
