"""Which rank plays which role: a pure function of the world size, the layout and, on several nodes, the
placement of the role groups on the nodes.

    topo = Topology.build(world_size, cfg.layout)                                   # blocks, one node
    topo = Topology.build(world_size, cfg.layout, cfg.placement, node_of_rank)      # placement on nodes
    topo.role(rank), topo.index(rank), topo.train, topo.trainer0

Without placement (every `placement.*` = any), ranks are laid out [generators | scorers | trainers]: with
layout 2+1+1, ranks 0-1 generate, rank 2 scores, rank 3 trains. A world of one rank plays all three roles
in turn (role "all"). With placement, `node_of_rank[r]` is the node index of rank r (its position in the
job's allocation: Slurm's block distribution puts ranks 0..tpn-1 on node 0, and so on); each group then
takes ranks on its nodes only. The block layout is kept whenever it already satisfies the placement;
otherwise a small max-flow decides how many ranks of each node each group takes, and within a node the
groups take its ranks in the order generate, score, train. Each group's ranks are in increasing order, so
its index order is its world-rank order. Results do not depend on any of this: every draw derives from
the identity of what is drawn, not from a rank (docs/slurm.md, "Placement").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hpc_rlhf.config import LayoutConfig, PlacementConfig
from hpc_rlhf.errors import ConfigError

ROLES = ("generate", "score", "train")


@dataclass(frozen=True)
class Topology:
    world_size: int
    generate: tuple[int, ...]
    score: tuple[int, ...]
    train: tuple[int, ...]

    @classmethod
    def build(
        cls,
        world_size: int,
        layout: LayoutConfig,
        placement: Optional[PlacementConfig] = None,
        node_of_rank: Optional[Sequence[int]] = None,
    ) -> Topology:
        """Raises ConfigError (one line) when the world size does not match the layout or the placement
        cannot be met by the ranks on each node."""
        if world_size == 1:
            return cls(1, (0,), (0,), (0,))
        if world_size != layout.world_size:
            raise ConfigError(
                f"MPI world size {world_size} != layout.generate+layout.score+layout.train = "
                f"{layout.generate}+{layout.score}+{layout.train} = {layout.world_size}; "
                f"start {layout.world_size} ranks or change layout.*"
            )
        g, s = layout.generate, layout.score
        blocks = cls(world_size, tuple(range(g)), tuple(range(g, g + s)), tuple(range(g + s, world_size)))
        wanted = {r: placement.nodes(r) for r in ROLES} if placement is not None else {}
        if not any(v is not None for v in wanted.values()):
            return blocks
        nodes = list(node_of_rank) if node_of_rank is not None else [0] * world_size
        if len(nodes) != world_size:
            raise ValueError(f"node_of_rank has {len(nodes)} entries for a world of {world_size}")
        for r in ROLES:
            if wanted[r] is not None and max(wanted[r]) > max(nodes):
                raise ConfigError(
                    f"placement.{r}={_fmt(wanted[r])} names node {max(wanted[r])} but the job has "
                    f"{max(nodes) + 1} node(s) (0-{max(nodes)}); change placement.{r} or slurm.nodes"
                )
        if all(wanted[r] is None or {nodes[x] for x in getattr(blocks, r)} <= set(wanted[r]) for r in ROLES):
            return blocks
        return cls(world_size, *_place(layout, wanted, nodes))

    @property
    def single(self) -> bool:
        return self.world_size == 1

    @property
    def trainer0(self) -> int:
        return self.train[0]

    def role(self, rank: int) -> str:
        if self.single:
            return "all"
        for name in ROLES:
            if rank in getattr(self, name):
                return name
        raise ValueError(f"rank {rank} outside world of {self.world_size}")

    def index(self, rank: int) -> int:
        """Position of `rank` within its role group."""
        return 0 if self.single else getattr(self, self.role(rank)).index(rank)

    def is_trainer(self, rank: int) -> bool:
        return rank in self.train

    def describe(self, rank: int) -> str:
        return f"{self.role(rank)} #{self.index(rank)}"

    def generator_rank(self, shard: int) -> int:
        return self.generate[shard % len(self.generate)]

    def scorer_rank(self, shard: int) -> int:
        return self.score[shard % len(self.score)]


def _place(layout: LayoutConfig, wanted: dict, nodes: list[int]) -> tuple[tuple[int, ...], ...]:
    """(generate, score, train) rank tuples meeting `wanted` (role -> node indices or None), or ConfigError."""
    n_nodes = max(nodes) + 1
    ranks_on = [[r for r, n in enumerate(nodes) if n == k] for k in range(n_nodes)]
    need = {r: getattr(layout, r) for r in ROLES}
    allowed = {r: list(range(n_nodes)) if wanted[r] is None else [k for k in wanted[r] if k < n_nodes] for r in ROLES}
    take = _max_flow(need, allowed, [len(x) for x in ranks_on])
    short = [r for r in ROLES if sum(take[r]) < need[r]]
    if short:
        where = "; ".join(
            f"node {k}: ranks {ranks_on[k][0]}-{ranks_on[k][-1]}" if ranks_on[k] else f"node {k}: none"
            for k in range(n_nodes)
        )
        asked = ", ".join(f"placement.{r}={_fmt(wanted[r])} ({need[r]} ranks)" for r in ROLES)
        raise ConfigError(
            f"placement cannot be met by the allocation ({where}): {asked}; the {'/'.join(short)} group does not "
            f"fit: change placement.* or slurm.nodes/slurm.tasks_per_node"
        )
    groups: dict[str, list[int]] = {r: [] for r in ROLES}
    for k in range(n_nodes):
        free = list(ranks_on[k])
        for r in ROLES:
            groups[r] += free[: take[r][k]]
            free = free[take[r][k] :]
    return tuple(tuple(sorted(groups[r])) for r in ROLES)  # type: ignore[return-value]


def _fmt(nodes: Optional[tuple[int, ...]]) -> str:
    return "any" if nodes is None else ",".join(map(str, nodes))


def _max_flow(need: dict[str, int], allowed: dict[str, list[int]], cap: list[int]) -> dict[str, list[int]]:
    """How many ranks of each node each role takes: a max flow role -> node (augmenting paths, in role
    and node order, so the answer is deterministic). take[role][node]."""
    take = {r: [0] * len(cap) for r in ROLES}
    left = list(cap)

    def augment(role: str, seen: set[str]) -> bool:
        seen.add(role)
        for k in allowed[role]:
            if left[k] > 0:
                left[k] -= 1
                take[role][k] += 1
                return True
        for k in allowed[role]:  # move a unit of another role off node k, elsewhere
            for other in ROLES:
                if other not in seen and take[other][k] > 0:
                    take[other][k] -= 1
                    if augment(other, seen):
                        take[role][k] += 1
                        return True
                    take[other][k] += 1
        return False

    for role in ROLES:
        for _ in range(need[role]):
            if not augment(role, set()):
                break
    return take
