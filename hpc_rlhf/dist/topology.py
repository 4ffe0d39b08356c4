"""Which rank plays which role: a pure function of the world size and the layout.

Ranks are laid out [generators | scorers | trainers]: with layout 2+1+1, ranks 0-1 generate, rank 2
scores, rank 3 trains. A world of one rank plays all three roles in turn (role "all").
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc_rlhf.config import LayoutConfig
from hpc_rlhf.errors import ConfigError

ROLES = ("generate", "score", "train")


@dataclass(frozen=True)
class Topology:
    world_size: int
    generate: tuple[int, ...]
    score: tuple[int, ...]
    train: tuple[int, ...]

    @classmethod
    def build(cls, world_size: int, layout: LayoutConfig) -> Topology:
        if world_size == 1:
            return cls(1, (0,), (0,), (0,))
        if world_size != layout.world_size:
            raise ConfigError(
                f"MPI world size {world_size} != layout.generate+layout.score+layout.train = "
                f"{layout.generate}+{layout.score}+{layout.train} = {layout.world_size}; "
                f"start {layout.world_size} ranks or change layout.*"
            )
        g, s = layout.generate, layout.score
        return cls(
            world_size,
            tuple(range(g)),
            tuple(range(g, g + s)),
            tuple(range(g + s, world_size)),
        )

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
