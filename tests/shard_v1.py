"""A writer of schema-version-1 shards (hpc-rlhf 0.1.0: one dataset per field, one attribute per key),
kept as the reference the compatibility tests read: archives written before version 2 stay readable."""

from __future__ import annotations

import time

import h5py
import numpy as np

from hpc_rlhf.rollout.schema import fields_for


def write_shard_v1(path: str, data: dict, attrs: dict) -> str:
    with h5py.File(path, "w") as f:
        for fl in fields_for(attrs["kind"], 1):
            arr = np.ascontiguousarray(data[fl.name], dtype=fl.dtype)
            if arr.size:
                f.create_dataset(fl.name, data=arr, chunks=(len(arr),), fletcher32=True)
            else:
                f.create_dataset(fl.name, data=arr)
        f.attrs.update({**attrs, "schema_version": 1, "created_unix": time.time()})
    return path
