"""Stream an archive's per-sample fields to parquet, csv or jsonl, in chunks (memory bounded by the chunk).

    n = export(Archive.open(run_dir), "samples.parquet", fmt="parquet", tokens=True)

Columns: every per-sample schema field, kl_seq and kl_per_token, `reward/NAME` for each reward source
of the archive (Archive.reward_sources(): unweighted values, NaN where a shard lacks the source), plus
on request rep_<n>gram / distinct_<n>
(`ngram`), prompt_tokens / response_tokens (`tokens`: lists in parquet and jsonl, space-separated ids in
csv) and prompt_text / response_text (`text`: decoded with the run's tokenizer; ids when there is none).
reward and the KL columns are NaN (parquet/csv) or null (jsonl) for samples that were never scored.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from hpc_rlhf.archive.store import Archive, Batch, dtype_of, source_field
from hpc_rlhf.archive.text import decode_many, load_tokenizer
from hpc_rlhf.errors import UserError
from hpc_rlhf.rollout.schema import PER_SAMPLE

FORMATS = ("parquet", "csv", "jsonl")
CHUNK_ROWS = 65536


def export_fields(
    ngram: Optional[int] = None, fields: Optional[list[str]] = None, sources: tuple[str, ...] = ()
) -> list[str]:
    base = list(fields) if fields else [*PER_SAMPLE, "kl_seq", "kl_per_token", *map(source_field, sources)]
    if ngram:
        base += [f"rep_{ngram}gram", f"distinct_{ngram}"]
    return list(dict.fromkeys(base))


class _Writer:
    def __init__(self, path: str, fmt: str):
        self.path, self.fmt = path, fmt
        self.rows = 0
        self._pq = None
        self._fh = None

    def write(self, cols: dict[str, Any], ragged: dict[str, tuple[np.ndarray, np.ndarray]], text: dict[str, list]):
        n = len(next(iter(cols.values()))) if cols else len(next(iter(ragged.values()))[1]) - 1
        if self.fmt == "parquet":
            self._write_parquet(cols, ragged, text)
        else:
            self._write_pandas(cols, ragged, text)
        self.rows += n

    def _write_parquet(self, cols, ragged, text) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays, names = [], []
        for k, v in cols.items():
            arrays.append(pa.array(v))
            names.append(k)
        for k, (flat, off) in ragged.items():
            arrays.append(pa.ListArray.from_arrays(pa.array(off, type=pa.int64()).cast(pa.int32()), pa.array(flat)))
            names.append(k)
        for k, v in text.items():
            arrays.append(pa.array(v, type=pa.string()))
            names.append(k)
        table = pa.Table.from_arrays(arrays, names=names)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.path, table.schema)
        self._pq.write_table(table)

    def _write_pandas(self, cols, ragged, text) -> None:
        import pandas as pd

        df = pd.DataFrame(cols)
        for k, (flat, off) in ragged.items():
            rows = [flat[off[i] : off[i + 1]].tolist() for i in range(len(off) - 1)]
            df[k] = [" ".join(map(str, r)) for r in rows] if self.fmt == "csv" else rows
        for k, v in text.items():
            df[k] = v
        if self._fh is None:
            self._fh = open(self.path, "w", newline="" if self.fmt == "csv" else None)
            header = True
        else:
            header = False
        if self.fmt == "csv":
            df.to_csv(self._fh, index=False, header=header)
        else:
            s = df.to_json(orient="records", lines=True, double_precision=15)
            self._fh.write(s if s.endswith("\n") or not s else s + "\n")

    def close(self, empty_cols: Optional[dict[str, np.ndarray]] = None) -> None:
        if self.rows == 0 and empty_cols is not None:  # still write a valid, empty file with the columns
            if self.fmt == "parquet":
                self._write_parquet(empty_cols, {}, {})
            elif self.fmt == "csv":
                self._write_pandas(empty_cols, {}, {})
            elif self._fh is None:
                self._fh = open(self.path, "w")
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()


def _concat(batches: list[Batch]) -> tuple[dict, dict]:
    cols = {k: np.concatenate([b.columns[k] for b in batches]) for k in batches[0].columns}
    ragged = {}
    for k in batches[0].ragged:
        flats = [b.ragged[k][0] for b in batches]
        offs, base = [np.zeros(1, dtype=np.int64)], 0
        for b in batches:
            off = b.ragged[k][1]
            offs.append(off[1:] + base)
            base += int(off[-1])
        ragged[k] = (np.concatenate(flats), np.concatenate(offs))
    return cols, ragged


def export(
    arc: Archive,
    out: str,
    fmt: str = "parquet",
    *,
    tokens: bool = False,
    text: bool = False,
    ngram: Optional[int] = None,
    fields: Optional[list[str]] = None,
    chunk_rows: int = CHUNK_ROWS,
    tokenizer_path: Optional[str] = None,
    **filters: Any,
) -> int:
    """Write the archive's samples (filtered) to `out`; returns the number of rows written."""
    if fmt not in FORMATS:
        raise UserError(f"export format '{fmt}' is not one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UserError("parquet export needs pyarrow: pip install 'hpc-rlhf[parquet]'") from None
    names = export_fields(ngram, fields, tuple(arc.reward_sources()))
    ragged_names = ["prompt_tokens", "response_tokens"] if (tokens or text) else []
    tok = load_tokenizer(tokenizer_path or arc.tokenizer_path(), arc.on_warning) if text else None
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(out)}.partial")
    w = _Writer(tmp, fmt)
    pending: list[Batch] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        cols, ragged = _concat(pending)
        txt = {}
        if text:
            txt["prompt_text"] = decode_many(tok, *ragged["prompt_tokens"])
            txt["response_text"] = decode_many(tok, *ragged["response_tokens"])
        if not tokens:
            ragged = {}
        w.write(cols, ragged, txt)
        pending, pending_rows = [], 0

    try:
        for b in arc.iter_batches([*names, *ragged_names], **filters):
            pending.append(b)
            pending_rows += len(b)
            if pending_rows >= chunk_rows:
                flush()
        flush()
        w.close({k: np.zeros(0, dtype=dtype_of(k)) for k in names})
    except BaseException:
        w.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)
    return w.rows
