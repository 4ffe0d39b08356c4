"""RUN_DIR/prompts.h5: a prompt file's set rendered once, which every rank reads instead of the prompt file.

    write_prompts(run_dir, cfg, flat)       # the launcher (launch/prepare.py), or rank 0 when it is missing
    flat = read_prompts(run_dir, cfg)       # every rank: FlatPrompts, or None when absent or made for another config

Rendering 100k prompts (read, check every row, chat template, tokenize) takes tens of seconds; every rank did
it at start. Now `prepare` does it once, while it checks the file, and writes the result here (atomically:
a temporary name, fsync, rename); the ranks read arrays (docs/your_model.md has the numbers). The file holds

    ids       (total tokens,) int32       the prompts' token ids, one after another
    offsets   (N + 1,) int64              prompt i is ids[offsets[i]:offsets[i+1]]
    labels    (N,) UTF-8 JSON per prompt  its label (a string or null); absent when the source has none
    raw       (N,) UTF-8 JSON per prompt  the prompt as written (a string or chat messages); absent likewise
    attrs     sha256 (the identity, rollout/prompt_store.py), stats (JSON), render (JSON: the task keys and
              tokenizer it was rendered with), version

A file rendered under other task keys or another tokenizer folder is not read (the ranks render the prompt
file themselves); one whose prompt set differs from a checkpoint's is refused at resume by its sha256.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any, Optional

import h5py
import numpy as np

from hpc_rlhf.config import Config
from hpc_rlhf.rollout.prompt_store import FlatPrompts
from hpc_rlhf.rundir import RunDir, fsync_dir, fsync_file, tmp_path

VERSION = 1
_STR = h5py.string_dtype("utf-8")


def render_key(cfg: Config) -> str:
    """What the rendered set depends on besides the files: the task keys and the tokenizer folder."""
    tokenizer = cfg.model.tokenizer_path or cfg.model.policy_path
    return json.dumps({"task": dataclasses.asdict(cfg.task), "tokenizer": tokenizer}, sort_keys=True, default=str)


def write_prompts(run_dir: str, cfg: Config, flat: FlatPrompts) -> str:
    """Write `flat` as RUN_DIR/prompts.h5 (atomically). Returns the path."""
    path = RunDir(run_dir).prompts
    tmp = tmp_path(path)
    try:
        with h5py.File(tmp, "w", track_order=True, locking=False) as f:
            f.create_dataset("ids", data=flat.ids.astype(np.int32, copy=False))
            f.create_dataset("offsets", data=flat.offsets.astype(np.int64, copy=False))
            for name, column in (("labels", flat.labels), ("raw", flat.raw)):
                if column is not None:
                    f.create_dataset(name, data=[json.dumps(v, ensure_ascii=False) for v in column], dtype=_STR)
            f.attrs.update(version=VERSION, sha256=flat.sha256, stats=json.dumps(flat.stats), render=render_key(cfg))
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")
    return path


def prompts_sha256(run_dir: str, cfg: Config) -> Optional[str]:
    """The sha256 of RUN_DIR/prompts.h5 when it is there and was rendered for `cfg`, else None."""
    path = RunDir(run_dir).prompts
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r", locking=False) as f:
        ok = f.attrs.get("version") == VERSION and f.attrs.get("render") == render_key(cfg)
        return str(f.attrs["sha256"]) if ok else None


def read_prompts(run_dir: str, cfg: Config) -> Optional[FlatPrompts]:
    """RUN_DIR/prompts.h5 as FlatPrompts (labels and text decoded when asked for), or None when it is absent
    or was rendered for other task keys or another tokenizer."""
    if prompts_sha256(run_dir, cfg) is None:
        return None
    with h5py.File(RunDir(run_dir).prompts, "r", locking=False) as f:
        columns = {k: _JsonColumn(f[k].asstr()[()]) if k in f else None for k in ("labels", "raw")}
        return FlatPrompts(
            f["ids"][()],
            f["offsets"][()],
            columns["labels"],  # type: ignore[arg-type]
            columns["raw"],  # type: ignore[arg-type]
            json.loads(f.attrs["stats"]),
            str(f.attrs["sha256"]),
        )


class _JsonColumn(Sequence):
    """One JSON text per prompt, decoded when read (a scorer reads a shard's few, not all of them)."""

    def __init__(self, texts: np.ndarray):
        self._texts = texts

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        return json.loads(self._texts[i])
