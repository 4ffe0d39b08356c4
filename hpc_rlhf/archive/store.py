"""Open a rollout archive (a run directory or a bare folder of shards) and stream it shard by shard.

    arc = Archive.open("runs/demo")                        # RUN_DIR/rollouts/step_*/{gen,scored}_*.h5
    arc = Archive.open("copied_shards/")                   # any folder holding *.h5, searched recursively
    for batch in arc.iter_batches(["reward", "kl_seq"], versions=(10, 20)):
        ...                                                # one Batch per shard, filtered
    df = arc.to_dataframe(["policy_version", "reward", "kl_seq", "rep_3gram"], prompts={3, 7})
    arc.reward_sources()                                   # ['rm', 'correct']: fields reward/NAME

Per-source rewards: field `reward/NAME` is the unweighted value of reward source NAME (a column of
the shards' `reward_sources`), NaN for a sample whose shard has no such source (or was not scored).
Memory: one shard's arrays at a time; tables only hold the requested per-sample columns.
A shard that cannot be read is skipped with a one-line warning (stderr) and remembered in `arc.skipped`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive import derived as D
from hpc_rlhf.archive.discover import ShardRef, discover
from hpc_rlhf.archive.filters import Filters, PromptSel, RangeSel, VersionSel
from hpc_rlhf.errors import ShardError, UserError
from hpc_rlhf.rollout.schema import BY_NAME, DERIVED, PER_SAMPLE, fields_for
from hpc_rlhf.rollout.shard import read_attrs, read_shard
from hpc_rlhf.rundir import RunDir

RAGGED = ("prompt_tokens", "response_tokens", "gen_logprobs", "ref_logprobs")
LOCATION = ("shard_id", "row")  # pseudo-fields: index into Archive.shards, row within that shard
SOURCE_PREFIX = "reward/"  # reward/NAME: the value of reward source NAME


def source_field(name: str) -> str:
    """The archive field of reward source `name`."""
    return SOURCE_PREFIX + name


def _stderr_warning(msg: str) -> None:
    sys.stderr.write(f"warning: {msg}\n")
    sys.stderr.flush()


@dataclass
class Batch:
    """The (filtered) samples of one shard.

    `columns`: per-sample arrays (one entry per requested field; reward/ref-derived fields are NaN for a
    shard that was never scored). `ragged`: name -> (flat, offsets) for requested token/per-token arrays.
    """

    ref: ShardRef
    shard_id: int
    attrs: dict
    columns: dict[str, np.ndarray]
    ragged: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        for v in self.columns.values():
            return len(v)
        for _flat, off in self.ragged.values():
            return len(off) - 1
        return 0

    def row(self, i: int, name: str) -> np.ndarray:
        flat, off = self.ragged[name]
        return flat[off[i] : off[i + 1]]

    def samples(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            s: dict[str, Any] = {k: v[i].item() for k, v in self.columns.items()}
            for name in self.ragged:
                s[name] = self.row(i, name)
            yield s


class Archive:
    """A rollout archive opened read-only. See the module docstring."""

    def __init__(
        self,
        path: str,
        shards: list[ShardRef],
        files: list[str],
        temporary: list[str],
        root: str,
        on_warning: Optional[Callable[[str], None]] = None,
    ):
        self.path = path
        self.root = root
        self.shards = shards
        self.files = files
        self.temporary = temporary
        self.on_warning = on_warning or _stderr_warning
        self.skipped: dict[str, str] = {}  # path -> reason, for shards skipped while reading
        self._fallback_warned: set[str] = set()

    @classmethod
    def open(cls, path: str, on_warning: Optional[Callable[[str], None]] = None) -> Archive:
        """Open a run directory (uses RUN_DIR/rollouts), a bare folder of *.h5 shards, or one shard file."""
        shards, files, tmp, root = discover(str(path))
        return cls(os.path.abspath(str(path)), shards, files, tmp, root, on_warning)

    # --- run-directory extras ---------------------------------------------------------------------
    @property
    def run_dir(self) -> Optional[str]:
        return self.path if os.path.isdir(RunDir(self.path).rollouts) else None

    def tokenizer_path(self) -> Optional[str]:
        """RUN_DIR/tokenizer (or PATH/tokenizer for a bare folder) when it exists."""
        for base in (self.path, os.path.dirname(self.path)):
            p = RunDir(base).tokenizer
            if os.path.isdir(p):
                return p
        return None

    def config_text(self) -> Optional[str]:
        p = RunDir(self.path).config
        if os.path.isfile(p):
            with open(p) as f:
                return f.read()
        return None

    def require_shards(self) -> None:
        if not self.shards:
            raise UserError(f"no rollout shards (*.h5) found under '{self.root}'")

    # --- streaming --------------------------------------------------------------------------------
    def _warn_skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            self.on_warning(reason)

    def _read(self, ref: ShardRef, raw: list[str], filt: Filters) -> Optional[tuple[dict, dict, str]]:
        """Read the raw fields of one shard (falls back to the generated twin of a damaged scored shard).

        Returns (data, attrs, kind read) or None when the shard is skipped (damaged or pruned)."""
        candidates = [(ref.path, ref.kind)]
        if ref.kind == "scored" and ref.generated_path:
            candidates.append((ref.generated_path, "generated"))
        for path, kind in candidates:
            if path in self.skipped:
                continue
            try:
                if filt.versions is not None or filt.steps is not None:
                    attrs = read_attrs(path)
                    if not filt.shard_may_match(attrs):
                        return None
                available = {f.name for f in fields_for(kind)} | set(DERIVED)  # group_id: always readable
                data, attrs = read_shard(path, [n for n in raw if n in available])
                _check_offsets(path, data)
                return data, attrs, kind
            except ShardError as e:
                msg = str(e)
                if path != candidates[-1][0]:
                    msg += (
                        f"; falling back to the generated shard {os.path.basename(candidates[-1][0])} (no reward/ref)"
                    )
                self._warn_skip(path, msg)
        return None

    def iter_batches(
        self,
        fields: Optional[Iterable[str]] = None,
        *,
        versions: VersionSel = None,
        prompts: PromptSel = None,
        rewards: RangeSel = None,
        steps: VersionSel = None,
        filters: Optional[Filters] = None,
        shard_ids: Optional[Iterable[int]] = None,
    ) -> Iterator[Batch]:
        """Yield one Batch per shard (skipping empty ones after filtering).

        fields: per-sample schema fields (`PER_SAMPLE`), derived ones (`kl_seq`, `kl_per_token`,
        `rep_{n}gram`, `distinct_{n}`), `shard_id`/`row`, and ragged ones (`prompt_tokens`,
        `response_tokens`, `gen_logprobs`, `ref_logprobs`) which land in Batch.ragged.
        Default: every per-sample schema field.
        """
        names = list(PER_SAMPLE) if fields is None else list(dict.fromkeys(fields))
        check_fields(names)
        filt = filters or Filters(versions, prompts, rewards, steps)
        raw = _raw_needed(names, filt)
        wanted_ids = None if shard_ids is None else set(int(i) for i in shard_ids)
        for sid, ref in enumerate(self.shards):
            if wanted_ids is not None and sid not in wanted_ids:
                continue
            got = self._read(ref, raw, filt)
            if got is None:
                continue
            data, attrs, kind = got
            n = int(attrs.get("num_samples", len(data["response_offsets"]) - 1 if "response_offsets" in data else 0))
            if n == 0:
                continue
            cols = _per_sample(data, names, filt, n, sid, attrs)
            mask = filt.mask(cols, n)
            ragged = {}
            for name in names:
                if name in RAGGED:
                    ragged[name] = _ragged(data, name, n)
            if mask is not None:
                if not mask.any():
                    continue
                cols = {k: v[mask] for k, v in cols.items()}
                ragged = {k: D.select_ragged(flat, off, mask) for k, (flat, off) in ragged.items()}
            cols = {k: cols[k] for k in names if k in cols}
            yield Batch(ref, sid, attrs, cols, ragged)

    def iter_samples(self, fields: Optional[Iterable[str]] = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Yield one dict per sample (per-sample values as Python scalars, ragged fields as arrays).

        Default fields: every per-sample field plus prompt_tokens and response_tokens."""
        if fields is None:
            fields = [*PER_SAMPLE, "prompt_tokens", "response_tokens"]
        for b in self.iter_batches(fields, **filters):
            yield from b.samples()

    def table(self, fields: Optional[Iterable[str]] = None, **filters: Any) -> dict[str, np.ndarray]:
        """Per-sample columns over the whole archive as compact numpy arrays (no ragged fields)."""
        names = list(PER_SAMPLE) if fields is None else list(dict.fromkeys(fields))
        bad = [n for n in names if n in RAGGED]
        if bad:
            raise UserError(f"table() holds per-sample fields only; {bad} are per-token: use iter_batches")
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for b in self.iter_batches(names, **filters):
            for n in names:
                parts[n].append(b.columns[n])
        return {n: (np.concatenate(v) if v else np.zeros(0, dtype=dtype_of(n))) for n, v in parts.items()}

    def to_dataframe(self, fields: Optional[Iterable[str]] = None, **filters: Any):
        """pandas DataFrame of per-sample fields (+ derived ones on request), one row per sample."""
        import pandas as pd

        return pd.DataFrame(self.table(fields, **filters))

    def reward_sources(self) -> list[str]:
        """Names of the reward sources of the archive's scored shards, in order of first appearance
        (shards of versions 1-2: `rm`); `reward/NAME` reads one. Reads no dataset."""
        names: dict[str, None] = {}
        for ref in self.shards:
            try:
                names.update(dict.fromkeys(read_attrs(ref.path).get("reward_sources", [])))
            except ShardError:
                continue
        return list(names)

    def versions(self) -> np.ndarray:
        """Sorted policy versions present (from the shards' attributes; reads no dataset)."""
        vs = set()
        for ref in self.shards:
            try:
                a = read_attrs(ref.path)
            except ShardError:
                continue
            if "policy_version" in a:
                vs.add(int(a["policy_version"]))
        return np.array(sorted(vs), dtype=np.int64)


def _check_offsets(path: str, data: dict[str, np.ndarray]) -> None:
    """Offsets must start at 0, never decrease and agree with the length fields (read_shard checks the end)."""
    for off, length in (("prompt_offsets", "prompt_len"), ("response_offsets", "response_len")):
        if off not in data:
            continue
        o = data[off]
        d = np.diff(o)
        if len(o) == 0 or o[0] != 0 or (d < 0).any():
            raise ShardError(f"shard '{path}': {off} are not non-decreasing from 0; it is skipped")
        if length in data and not np.array_equal(d, data[length]):
            raise ShardError(f"shard '{path}': {length} disagrees with {off}; it is skipped")


def check_fields(names: list[str]) -> None:
    valid = set(PER_SAMPLE) | set(RAGGED) | set(LOCATION)
    bad = [n for n in names if n not in valid and not D.is_derived(n) and not _is_source(n)]
    if bad:
        raise UserError(
            f"unknown field(s) {bad}; valid: {sorted(valid)}, derived kl_seq, kl_per_token, rep_<n>gram, "
            "distinct_<n>, and reward/<source> (Archive.reward_sources())"
        )


def _is_source(name: str) -> bool:
    return name.startswith(SOURCE_PREFIX) and len(name) > len(SOURCE_PREFIX)


def _raw_needed(names: list[str], filt: Filters) -> list[str]:
    raw: list[str] = []
    for n in [*names, *filt.needed_fields()]:
        if n in BY_NAME:
            raw.append(n)
            if n in RAGGED:
                raw += ["prompt_offsets"] if n == "prompt_tokens" else ["response_offsets"]
        elif n in DERIVED_KL:
            raw += ["response_offsets", "gen_logprobs", "ref_logprobs"]
            if n == "kl_per_token":
                raw.append("response_len")
        elif D.parse_ngram_field(n):
            raw += ["response_offsets", "response_tokens"]
        elif _is_source(n):
            raw.append("reward_sources")
    return list(dict.fromkeys(raw))


DERIVED_KL = D.DERIVED_FIXED


def dtype_of(name: str) -> np.dtype:
    if name in BY_NAME:
        return np.dtype(BY_NAME[name].dtype)
    if name in LOCATION:
        return np.dtype(np.int64)
    if name in DERIVED_KL:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _per_sample(data: dict, names: list[str], filt: Filters, n: int, sid: int, attrs: dict) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    sources = list(attrs.get("reward_sources", [])) if "reward_sources" in data else []
    for name in [*names, *filt.needed_fields()]:
        if name in cols or name in RAGGED:
            continue
        if _is_source(name):
            j = sources.index(name[len(SOURCE_PREFIX) :]) if name[len(SOURCE_PREFIX) :] in sources else -1
            cols[name] = data["reward_sources"][:, j].copy() if j >= 0 else np.full(n, np.nan, dtype=np.float32)
        elif name in BY_NAME:
            cols[name] = data[name] if name in data else np.full(n, np.nan, dtype=np.float32)
        elif name == "shard_id":
            cols[name] = np.full(n, sid, dtype=np.int64)
        elif name == "row":
            cols[name] = np.arange(n, dtype=np.int64)
    if any(x in names for x in DERIVED_KL):
        if "ref_logprobs" in data:
            kl = D.kl_seq(data["gen_logprobs"], data["ref_logprobs"], data["response_offsets"])
        else:
            kl = np.full(n, np.nan)
        if "kl_seq" in names:
            cols["kl_seq"] = kl
        if "kl_per_token" in names:
            lens = D.lengths(data["response_offsets"])
            with np.errstate(invalid="ignore", divide="ignore"):
                cols["kl_per_token"] = np.where(lens > 0, kl / np.maximum(lens, 1), np.nan)
    by_n: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        p = D.parse_ngram_field(name)
        if p is None:
            continue
        kind, k = p
        if k not in by_n:
            by_n[k] = D.ngram_rates(data["response_tokens"], data["response_offsets"], k)
        cols[name] = by_n[k][0] if kind == "rep" else by_n[k][1]
    return cols


def _ragged(data: dict, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    off = data["prompt_offsets"] if name == "prompt_tokens" else data["response_offsets"]
    if name in data:
        return data[name], off
    return np.full(int(off[-1]), np.nan, dtype=np.float32), off  # ref_logprobs of a generated shard
