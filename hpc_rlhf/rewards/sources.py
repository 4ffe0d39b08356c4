"""The configured reward sources of a run, and the checked call of a reward function (see the package
docstring for the contract).

    sources = RewardSources(cfg)
    sources.needs_model, sources.needs_text, sources.names, sources.weights
    reward, per_source = sources.compute(model_scores, batch)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.config.schema import REWARD_FUNCTION_ARGS, REWARD_FUNCTION_KEYWORDS
from hpc_rlhf.errors import UserError, first_line
from hpc_rlhf.plugins import load_function, takes_keyword

FIX = "a reward function returns one finite number per response"


class RewardFunctionError(UserError):
    """A reward function failed or returned something that is not one finite number per response."""


@dataclass(frozen=True)
class RewardBatch:
    """What a reward function is called with (one shard's samples), plus where they come from."""

    prompts: list[str]
    responses: list[str]
    prompt_ids: list[np.ndarray]
    response_ids: list[np.ndarray]
    labels: list[Optional[str]]
    prompt_index: np.ndarray
    sample_index: np.ndarray
    where: str  # e.g. "step 3 shard 1", for the error messages

    def __len__(self) -> int:
        return len(self.response_ids)

    def one(self, i: int) -> RewardBatch:
        """The batch of sample i alone."""
        sl = slice(i, i + 1)
        return RewardBatch(
            self.prompts[sl], self.responses[sl], self.prompt_ids[sl], self.response_ids[sl], self.labels[sl],
            self.prompt_index[sl], self.sample_index[sl], self.where,
        )  # fmt: skip

    def sample(self, i: int) -> str:
        return f"sample (prompt {int(self.prompt_index[i])}, sample {int(self.sample_index[i])}) of {self.where}"


def reward_batch(
    tok: Any,
    prompt_ids: list[np.ndarray],
    response_ids: list[np.ndarray],
    labels: list[Optional[str]],
    prompt_index: np.ndarray,
    sample_index: np.ndarray,
    where: str,
    text: bool = True,
) -> RewardBatch:
    """A RewardBatch; the texts decoded with `tok` (special tokens skipped), or empty strings when not `text`."""
    dec = (lambda ids: tok.decode(ids, skip_special_tokens=True)) if text else (lambda ids: "")
    return RewardBatch(
        [dec(p) for p in prompt_ids], [dec(r) for r in response_ids], list(prompt_ids), list(response_ids),
        list(labels), np.asarray(prompt_index), np.asarray(sample_index), where,
    )  # fmt: skip


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    weight: float
    spec: str  # the function's 'module:function', or 'model'
    fn: Optional[Callable[..., Any]]
    kwargs: tuple[str, ...]  # the optional keywords it declares


def combine(values: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """(N,) float32 reward = sum_s weights[s] * values[:, s], accumulated in float64 in source order.
    One source of weight 1.0: values[:, 0] itself, bit for bit (no arithmetic on it)."""
    if len(weights) == 1 and weights[0] == 1.0:
        return np.ascontiguousarray(values[:, 0], dtype=np.float32)
    acc = np.zeros(values.shape[0], dtype=np.float64)
    for s, w in enumerate(weights):
        acc += float(w) * values[:, s].astype(np.float64)
    return acc.astype(np.float32)


class RewardSources:
    """The sources of `cfg.reward.sources`, functions loaded (their checks ran at config load)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.sources: list[Source] = []
        for i, s in enumerate(cfg.reward.sources):
            fn, kw = None, ()
            if s.kind == "function":
                key = f"reward.sources[{i}].function"
                fn = load_function(str(s.function), key, REWARD_FUNCTION_ARGS, REWARD_FUNCTION_KEYWORDS)
                kw = tuple(k for k in REWARD_FUNCTION_KEYWORDS if takes_keyword(fn, k))
            self.sources.append(Source(s.name, s.kind, float(s.weight), s.function or "model", fn, kw))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def weights(self) -> list[float]:
        return [s.weight for s in self.sources]

    @property
    def needs_model(self) -> bool:
        return any(s.kind == "model" for s in self.sources)

    @property
    def needs_text(self) -> bool:
        return any(s.kind == "function" for s in self.sources)

    def compute(self, model_scores: Optional[np.ndarray], batch: RewardBatch) -> tuple[np.ndarray, np.ndarray]:
        """(reward (N,) float32, values (N, S) float32, one column per source in config order)."""
        values = np.empty((len(batch), len(self.sources)), dtype=np.float32)
        for j, s in enumerate(self.sources):
            if s.kind == "model":
                assert model_scores is not None, "a model source needs the reward model's scores"
                values[:, j] = model_scores
            else:
                values[:, j] = self.call(s, batch)
        return combine(values, self.weights), values

    def call(self, s: Source, batch: RewardBatch) -> np.ndarray:
        """The function's values for the batch as (N,) float32; RewardFunctionError (one line) otherwise."""
        try:
            out = self._invoke(s, batch)
        except Exception as e:  # noqa: BLE001 - any failure of user code: name the function and the sample
            raise RewardFunctionError(self._blame(s, batch, e)) from None
        return check_values(s, out, batch)

    def _invoke(self, s: Source, batch: RewardBatch) -> Any:
        kw = {k: self.cfg for k in s.kwargs}  # only `cfg` today
        assert s.fn is not None
        return s.fn(batch.prompts, batch.responses, batch.prompt_ids, batch.response_ids, batch.labels, **kw)

    def _blame(self, s: Source, batch: RewardBatch, e: Exception) -> str:
        """Name the first sample on which the function raises alone; the batch when none does."""
        head = f"reward function '{s.spec}' (reward source '{s.name}') raised"
        for i in range(len(batch)):
            try:
                self._invoke(s, batch.one(i))
            except Exception as e1:  # noqa: BLE001
                return f"{head} {type(e1).__name__}: {first_line(e1)} on {batch.sample(i)}"
        return f"{head} {type(e).__name__}: {first_line(e)} on the {len(batch)} samples of {batch.where}"


def check_values(s: Source, out: Any, batch: RewardBatch) -> np.ndarray:
    """`out` as (N,) float32 when it is one finite real number per sample; else RewardFunctionError."""
    head, n = f"reward function '{s.spec}' (reward source '{s.name}') returned", len(batch)
    if isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__") or getattr(out, "ndim", 1) != 1:
        raise RewardFunctionError(
            f"{head} a {type(out).__name__}, not a sequence of {n} numbers for {batch.where}; {FIX}"
        )
    if len(out) != n:
        raise RewardFunctionError(f"{head} {len(out)} values for the {n} samples of {batch.where}; {FIX}")
    vals = np.empty(n, dtype=np.float32)
    for i, v in enumerate(out):
        if not isinstance(v, numbers.Real):
            raise RewardFunctionError(f"{head} {v!r} ({type(v).__name__}), not a number, for {batch.sample(i)}; {FIX}")
        vals[i] = np.float32(v) if math.isfinite(float(v)) and abs(float(v)) < 3.4e38 else np.nan
        if not np.isfinite(vals[i]):
            raise RewardFunctionError(f"{head} {float(v)} for {batch.sample(i)}; {FIX} (no NaN, inf or > 3.4e38)")
    return vals
