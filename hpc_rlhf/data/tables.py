"""A local data file or folder as a `datasets.Dataset`, read in memory: nothing is downloaded or cached on disk.

    ds = open_table("prompts.parquet", what="task.prompts_path")   # JSONL, JSON, Parquet, CSV, or a saved dataset
    require_columns(ds, ["prompt"], "prompts.parquet", what="task.prompt_column")
    text = cell(ds, i, "prompt", "prompts.parquet", kind=str)       # one-line UserError naming file, row and fix

Formats, by suffix: `.jsonl`/`.json` (one JSON object per line; a parse error names its line), `.parquet`, `.csv`,
`.tsv`; a folder is either a dataset written by `Dataset.save_to_disk` (has `dataset_info.json` or `state.json`) or
holds files of one of those formats, read in name order and concatenated. The datasets library's own
`load_dataset` is not used: it writes an Arrow cache under ~/.cache, and a run writes nothing outside RUN_DIR.
Rows are numbered from 1 in messages (a JSONL row's number is its line number among non-empty lines).
"""

from __future__ import annotations

import json
import os
from typing import Any

import datasets
import pyarrow as pa

from hpc_rlhf.errors import UserError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")


def open_table(path: str, what: str) -> datasets.Dataset:
    """The rows of the file or folder `path` (named by config key `what` in errors) as an in-memory Dataset."""
    if not path:
        raise UserError(f"{what} is not set: give a JSONL, Parquet or CSV file, or a saved dataset folder")
    if not os.path.exists(path):
        raise UserError(f"{what}={path}: no such file or folder")
    if os.path.isdir(path):
        return _open_folder(path, what)
    if not path.endswith(SUFFIXES):
        raise UserError(f"{what}={path}: unknown format; use one of {', '.join(SUFFIXES)} or a saved dataset folder")
    try:
        ds = _read_file(path)
    except UserError:
        raise
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path}: cannot be read as {os.path.splitext(path)[1][1:]} ({first}); fix or re-export the file"
        ) from None
    if len(ds) == 0:
        raise UserError(f"{path}: holds no rows")
    return ds


def _open_folder(path: str, what: str) -> datasets.Dataset:
    markers = (datasets.config.DATASET_INFO_FILENAME, datasets.config.DATASET_STATE_JSON_FILENAME)
    if any(os.path.exists(os.path.join(path, m)) for m in markers):  # dataset_info.json, state.json
        try:
            ds = datasets.load_from_disk(path, keep_in_memory=True)
        except Exception as e:  # noqa: BLE001 -- any failure of the saved folder is the user's data
            raise UserError(
                f"{path}: not a readable saved dataset ({type(e).__name__}: {e}); re-save it with Dataset.save_to_disk"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            raise UserError(f"{path}: a DatasetDict with splits {sorted(ds)}; point {what} at one split's folder")
        return ds
    files = sorted(f for f in os.listdir(path) if f.endswith(SUFFIXES))
    if not files:
        raise UserError(f"{what}={path}: a folder with no saved dataset and no {', '.join(SUFFIXES)} files")
    parts = [open_table(os.path.join(path, f), what) for f in files]
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as e:
        raise UserError(f"{path}: its files have different columns ({e}); give files of one schema") from None


def _read_file(path: str) -> datasets.Dataset:
    if path.endswith((".jsonl", ".json")):
        return datasets.Dataset.from_list(_read_jsonl(path))
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return datasets.Dataset(pq.read_table(path))
    import pyarrow.csv as pcsv

    opts = pcsv.ParseOptions(delimiter="\t" if path.endswith(".tsv") else ",")
    return datasets.Dataset(pcsv.read_csv(path, parse_options=opts))


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg}); one JSON object per line") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def require_columns(ds: datasets.Dataset, columns: list[str], path: str, what: str) -> None:
    """One-line error when a column the config names (key `what`) is missing."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r} (columns: {ds.column_names}); set {what} to one of them")


def cell(ds: datasets.Dataset, i: int, column: str, path: str, kind: type | tuple = str) -> Any:
    """Row i's `column` (row numbers in errors count from 1), checked to be of `kind` and not empty."""
    v = ds[i][column]
    if v is None or not isinstance(v, kind) or (isinstance(v, (str, list)) and len(v) == 0):
        got = "empty" if v is not None and isinstance(v, (str, list)) else f"a {type(v).__name__}"
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{path}: row {i + 1}: column {column!r} is {got}; every row needs a non-empty {want}")
    return v
