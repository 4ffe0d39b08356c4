"""Vectorised per-sample quantities computed from a shard's flat (ragged) arrays.

Everything here works on one shard at a time: a flat array plus int64 offsets of length N+1
(`schema.py`). No Python loop runs per sample.

    kl = seq_sums(gen_logprobs - ref_logprobs, response_offsets)   # k1 sequence KL per sample
    total, distinct = ngram_counts(response_tokens, response_offsets, n=3)
"""

from __future__ import annotations

import re

import numpy as np

# Derived per-sample fields, computed on request (see Archive.iter_batches).
DERIVED_FIXED = ("kl_seq", "kl_per_token")
_REP = re.compile(r"^rep_(\d+)gram$")
_DISTINCT = re.compile(r"^distinct_(\d+)$")


def parse_ngram_field(name: str) -> tuple[str, int] | None:
    """'rep_3gram' -> ('rep', 3); 'distinct_2' -> ('distinct', 2); anything else -> None."""
    for kind, pat in (("rep", _REP), ("distinct", _DISTINCT)):
        m = pat.match(name)
        if m and int(m.group(1)) >= 1:
            return kind, int(m.group(1))
    return None


def is_derived(name: str) -> bool:
    return name in DERIVED_FIXED or parse_ngram_field(name) is not None


def lengths(offsets: np.ndarray) -> np.ndarray:
    return np.diff(np.asarray(offsets, dtype=np.int64))


def ragged_arange(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of arange(starts[i], starts[i] + lens[i]) for all i, without a loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(lens) - lens
    return np.repeat(np.asarray(starts, dtype=np.int64) - excl, lens) + np.arange(total, dtype=np.int64)


def select_ragged(flat: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the rows `keep` (bool mask or index array) of a ragged array -> (flat, offsets)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    starts = offsets[:-1][keep]
    lens = (offsets[1:] - offsets[:-1])[keep]
    new_off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    return flat[ragged_arange(starts, lens)], new_off


def seq_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-sample sums of a per-token array (float64); 0 for empty samples. np.add.reduceat on non-empty rows."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.float64)
    lens = offsets[1:] - offsets[:-1]
    nonempty = lens > 0
    if nonempty.any():
        # Consecutive non-empty starts delimit exactly one sample each (empty rows hold no elements).
        out[nonempty] = np.add.reduceat(np.asarray(values, dtype=np.float64), offsets[:-1][nonempty])
    return out


def kl_seq(gen_logprobs: np.ndarray, ref_logprobs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """k1 sequence KL to the reference per sample: sum over response tokens of (gen - ref)."""
    return seq_sums(np.asarray(gen_logprobs, np.float64) - np.asarray(ref_logprobs, np.float64), offsets)


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * _MIX1
        h = h ^ (h >> np.uint64(27))
        h = h * _MIX2
        return h ^ (h >> np.uint64(31))


def ngram_counts(tokens: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: (number of n-grams, number of distinct n-grams) within its own token sequence.

    One sort of a uint64 key per shard: (sample id in the high bits, n-gram below). The n-gram is
    packed exactly when its ids fit the remaining bits (any vocab < 2**14 for n=3 with < 2**20 samples),
    else hashed to the remaining bits (splitmix64; a collision, ~1 in 2**40 per pair, undercounts distinct).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = offsets[1:] - offsets[:-1]
    num = len(lens)
    total = np.maximum(lens - (n - 1), 0)
    distinct = np.zeros(num, dtype=np.int64)
    if num == 0 or int(total.sum()) == 0:
        return total, distinct
    pos = ragged_arange(offsets[:-1], total)
    sid = np.repeat(np.arange(num, dtype=np.uint64), total)
    tok = np.asarray(tokens).astype(np.int64, copy=False)
    sid_bits = max(1, int(num - 1).bit_length())
    free = 63 - sid_bits
    tok_bits = max(1, int(max(int(tok.max(initial=0)), 0)).bit_length())
    if int(tok.min(initial=0)) >= 0 and n * tok_bits <= free:
        key = np.zeros(len(pos), dtype=np.uint64)
        for k in range(n):
            key = (key << np.uint64(tok_bits)) | tok[pos + k].astype(np.uint64)
    else:
        key = np.zeros(len(pos), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                key = _mix64(key * _MUL + tok[pos + k].astype(np.uint64))
        key = key >> np.uint64(64 - free)
    key = key | (sid << np.uint64(free))
    key.sort()
    new = np.empty(len(key), dtype=bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    distinct = np.bincount((key[new] >> np.uint64(free)).astype(np.int64), minlength=num)
    return total, distinct


def ngram_rates(tokens: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(repeated n-gram rate, distinct-n) per sample, float32; NaN for responses shorter than n.

    repeated rate = 1 - distinct/total: the fraction of the response's n-grams that repeat an earlier
    one of the same response (0 = no repetition, near 1 = a loop). distinct-n = distinct/total.
    """
    total, distinct = ngram_counts(tokens, offsets, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.where(total > 0, distinct / np.maximum(total, 1), np.nan)
    return (1.0 - dist).astype(np.float32), dist.astype(np.float32)
