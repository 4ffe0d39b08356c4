"""Read a W&B offline run file (run-ID.wandb) with W&B's own protobuf: the tests' check of what reached W&B.

The file is W&B's transaction log: a 7-byte header (":W&B", 0xBEE1, version 0), then 32 KiB blocks of
records (4-byte checksum, 2-byte length, 1-byte type: full / first / middle / last), each a serialised
`wandb_internal_pb2.Record`. wandb 0.31 reads it in its Go core only, so the few lines here replace the
Python reader older wandb releases shipped (wandb/sdk/internal/datastore.py).
"""

from __future__ import annotations

import json
import struct

from wandb.proto import wandb_internal_pb2

_BLOCK, _HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str) -> list[wandb_internal_pb2.Record]:
    data = open(path, "rb").read()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), path
    out, pos, parts = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:
            break
        body = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        parts = body if kind in (FULL, FIRST) else parts + body
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(parts)
            out.append(rec)
    return out


def history(path: str) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} of the file's history records."""
    out: dict[int, dict[str, float]] = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            out.setdefault(int(r.history.step.num), {}).update(items)
    return out


def run_info(path: str) -> tuple[str, dict]:
    """(run id, config {key: value}) of the file's run record and config updates."""
    run_id, config = "", {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run_id = r.run.run_id
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in r.config.update})
    return run_id, config
