"""Shared batch builders for the algo tests (plain float64 CPU tensors)."""

import torch

# (B, T) shapes, with single-token and single-row corners.
SHAPES = [(1, 1), (2, 1), (3, 5), (4, 7), (6, 12)]
SEEDS = [0, 1, 2]


def make_mask(B: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """A right-padded response mask: random lengths in [0, T], row 0 empty and the last row full when B >= 2."""
    lengths = torch.randint(0, T + 1, (B,), generator=gen)
    if B >= 2:
        lengths[0] = 0
        lengths[-1] = T
    return (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float64)


def batch(B: int, T: int, seed: int) -> tuple[torch.Generator, torch.Tensor]:
    """(generator, mask) for one parametrised case."""
    gen = torch.Generator().manual_seed(seed)
    return gen, make_mask(B, T, gen)


def rand(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def poison(x: torch.Tensor, mask: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    """`x` with every masked-out entry replaced by `value` (padding garbage that must never leak)."""
    return torch.where(mask != 0, x, torch.full_like(x, value))


def rows(x: torch.Tensor) -> list[list[float]]:
    """A (B, T) tensor as nested Python floats, for the loop references."""
    return [[float(v) for v in row] for row in x.detach()]


def lengths(mask: torch.Tensor) -> list[int]:
    return [int(v) for v in mask.sum(dim=1)]
