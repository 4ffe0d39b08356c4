"""A writer of schema-version-2 shards (before rewards as sources: three datasets, JSON metadata, no
group_id or reward_sources), kept as the reference the compatibility tests read."""

from __future__ import annotations

import json
import time

import h5py
import numpy as np

from hpc_rlhf.rollout.schema import fields_for


def _table(data: dict, names: list[str]) -> np.ndarray:
    t = np.empty(len(data[names[0]]), dtype=[(n, fl) for n, fl in ((n, _dtype(n)) for n in names)])
    for n in names:
        t[n] = data[n]
    return t


def _dtype(name: str) -> str:
    return next(f.dtype for f in fields_for("scored", 2) if f.name == name)


def write_shard_v2(path: str, data: dict, attrs: dict) -> str:
    fields = fields_for(attrs["kind"], 2)
    per_sample = [f.name for f in fields if f.shape == "N"]
    per_token = [f.name for f in fields if f.shape == "R"]
    with h5py.File(path, "w") as f:
        for name, arr in (
            ("samples", _table(data, per_sample)),
            ("prompt_tokens", np.ascontiguousarray(data["prompt_tokens"], dtype=np.int32)),
            ("response", _table(data, per_token)),
        ):
            if arr.size:
                f.create_dataset(name, data=arr, chunks=(len(arr),), fletcher32=True)
            else:
                f.create_dataset(name, data=arr)
        f.attrs["schema_version"] = np.int64(2)
        meta = {**attrs, "schema_version": 2, "created_unix": time.time()}
        f.attrs["meta"] = np.bytes_(json.dumps(meta, sort_keys=True))
    return path
