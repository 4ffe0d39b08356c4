"""The checkpoint's tensor files (written from the tensors' memory, hashed while written), the optimizer
state split into tensors + an exact-JSON skeleton (no pickle), and the rollout sync a checkpoint does
before it commits."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hpc_rlhf.checkpoint import exact_json
from hpc_rlhf.checkpoint.tensorfile import join_tensors, read_into, split_tensors, write_tensors
from hpc_rlhf.config import load_config
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.trainer_loop import TrainSession
from hpc_rlhf.rollout import sync
from hpc_rlhf.rollout.plan import shard_path

TINY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml")


def test_write_tensors_reads_back_with_safetensors_and_reports_the_file_hash(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "w": torch.randn(5, 3, generator=g),
        "transposed": torch.randn(4, 6, generator=g).t(),  # not contiguous
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "half": torch.randn(3, generator=g).half(),
        "f64": torch.randn(2, generator=g, dtype=torch.float64),
        "mask": torch.tensor([True, False, True]),
        "ids": torch.arange(11, dtype=torch.int64),
        "bytes": torch.arange(5, dtype=torch.uint8),
    }
    path = str(tmp_path / "t.safetensors")
    sha, size = write_tensors(path, tensors, {"format": "pt"})
    raw = open(path, "rb").read()
    assert sha == hashlib.sha256(raw).hexdigest() and size == len(raw)
    back = load_file(path)
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape and torch.equal(back[k], t.contiguous()), k
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    assert n % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    for k, meta in header.items():  # every tensor starts aligned to its element size
        if k != "__metadata__":
            assert meta["data_offsets"][0] % tensors[k].element_size() == 0, k


def _adam(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 1.0 / (n + 1))
    return model, opt, sched


def _train(model, opt, sched, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model(torch.randn(3, 4, generator=g)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_optimizer_state_split_into_a_file_and_back_continues_bit_identically(tmp_path):
    model, opt, sched = _adam(0)
    _train(model, opt, sched, 3, seed=1)
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state()}
    skeleton, tensors = split_tensors(state)
    assert "opt/state/0/exp_avg" in tensors and "rng" in tensors
    write_tensors(str(tmp_path / "o.safetensors"), tensors)
    (tmp_path / "o.json").write_text(exact_json.dumps(skeleton))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, sched, 2, seed=2)  # the uninterrupted continuation

    model2, opt2, sched2 = _adam(0)
    model2.load_state_dict(weights)
    back = join_tensors(exact_json.loads((tmp_path / "o.json").read_text()), load_file(str(tmp_path / "o.safetensors")))
    opt2.load_state_dict(back["opt"])
    sched2.load_state_dict(back["sched"])
    assert torch.equal(back["rng"], state["rng"])
    _train(model2, opt2, sched2, 2, seed=2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_checkpoint_syncs_the_shards_of_the_steps_it_covers(tmp_path, monkeypatch, tiny_rm):
    run = tmp_path / "run"
    synced: list[list[str]] = []
    real = sync.sync_paths
    monkeypatch.setattr(sync, "sync_paths", lambda paths: (synced.append(sorted(paths)), real(paths)))
    for mode, expect in (("checkpoint", True), ("every_shard", False)):
        synced.clear()
        cfg = load_config(TINY, [f"run_dir={run}-{mode}", *tiny_rm["overrides"], f"checkpoint.sync_rollouts={mode}"])
        os.makedirs(cfg.run_dir)
        files = {
            s: [shard_path(cfg.run_dir, s, j, k) for j in range(2) for k in ("generated", "scored")] for s in range(5)
        }
        for paths in files.values():
            for p in paths:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "wb").close()
        sess = TrainSession(cfg, cfg.run_dir, torch.device("cpu"), DataParallel(0, 1), lead=True)
        sess.checkpoint(2)
        sess.checkpoint(4)
        if expect:
            assert synced == [sorted(files[0] + files[1]), sorted(files[2] + files[3])]
        else:
            assert synced == []


def test_a_checkpoint_with_everything_in_optim_pt_still_resumes(tmp_path, tiny_rm):
    """Checkpoints written before optim.safetensors existed (0.1.0) kept the whole optimizer state in optim.pt."""
    from hpc_rlhf.checkpoint.store import MARKER, find_latest
    from hpc_rlhf.checkpoint.train_state import read_optim

    cfg = load_config(TINY, [f"run_dir={tmp_path / 'run'}", *tiny_rm["overrides"]])
    os.makedirs(cfg.run_dir)
    sess = TrainSession(cfg, cfg.run_dir, torch.device("cpu"), DataParallel(0, 1), lead=True)
    for model, opt in ((sess.ctx.policy, sess.ctx.opt_policy), (sess.ctx.value, sess.ctx.opt_value)):
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.01)
        opt.step()
    sess.checkpoint(1)
    folder = find_latest(cfg.run_dir).path
    full = read_optim(folder)
    torch.save(full, os.path.join(folder, "optim.pt"))  # the old layout: one optim.pt, no optim.safetensors
    for gone in ("optim.safetensors", "optim.json"):
        os.unlink(os.path.join(folder, gone))
    with open(os.path.join(folder, MARKER)) as f:
        manifest = json.load(f)
    for gone in ("optim.safetensors", "optim.json"):
        del manifest["files"][gone]
    raw = open(os.path.join(folder, "optim.pt"), "rb").read()
    manifest["files"]["optim.pt"] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    with open(os.path.join(folder, MARKER), "w") as f:
        json.dump(manifest, f)
    again = TrainSession(cfg, cfg.run_dir, torch.device("cpu"), DataParallel(0, 1), lead=True)
    assert again.start_step == 1
    a, b = sess.ctx.opt_policy.state_dict()["state"], again.ctx.opt_policy.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


def _same(a, b, where: str = "") -> None:
    """a and b are equal and of the same types all the way down (int keys stay ints, tuples tuples,
    nan is nan, -0.0 is -0.0, tensors equal in dtype, shape and values)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}/{i}")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def test_exact_json_round_trips_real_optimizer_scheduler_and_kl_controller_states():
    from hpc_rlhf.algo import make_kl_controller

    model, opt, sched = _adam(0)
    _train(model, opt, sched, 3, seed=1)
    fixed, adaptive = make_kl_controller(False, 0.05, 6.0, 10000), make_kl_controller(True, 0.05, 6.0, 10000)
    adaptive.update(7.5, 64)
    state = {
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "kl_fixed": fixed.state_dict(),
        "kl_adaptive": adaptive.state_dict(),
        "rng": torch.get_rng_state(),
    }
    assert opt.param_groups[0]["fused"] is True and isinstance(state["opt"]["param_groups"][0]["betas"], tuple)
    skeleton, tensors = split_tensors(state)
    back = join_tensors(exact_json.loads(exact_json.dumps(skeleton)), tensors)
    _same(state, back)
    assert list(back["opt"]["state"]) == [0, 1, 2, 3]  # int keys, in order


def test_exact_json_keeps_every_type_and_refuses_what_it_cannot_keep():
    cases = {
        "tuple_vs_list": [(1, 2), [1, 2], (), [], ((1,), [2])],
        "keys": {0: "a", "0": "b", -3: None, (1, "x"): True, "$tuple": 1, True: 2.0},
        "floats": [0.1, 1e-300, 1.7976931348623157e308, -0.0, math.inf, -math.inf, math.nan, 3.0],
        "plain": {"none": None, "bools": [True, False], "big": 2**70, "text": 'é\n"', "nested": {"a": {"b": []}}},
    }
    _same(cases, exact_json.loads(exact_json.dumps(cases)))
    for bad in (b"bytes", {1, 2}, np.float64(1.0), OrderedDict(a=1), torch.zeros(1)):
        with pytest.raises(TypeError, match="no exact JSON form"):
            exact_json.dumps({"x": [bad]})
    for text in ('{"$code": "x"}', '{"$float": "1.5"}', '{"$tuple": 3}', "NaN", '{"$dict": [[[1], 2]]}'):
        with pytest.raises(ValueError):
            exact_json.loads(text)


def test_read_into_fills_existing_tensors_as_load_file_and_copy_would(tmp_path):
    """read_into (the generators' published weights) against safetensors' own reader + copy_: every dtype of
    the file, cast into another dtype, a 0-d and an empty tensor, a name the targets lack; a cut file fails."""
    g = torch.Generator().manual_seed(3)
    tensors = {
        "w": torch.randn(5, 7, generator=g),
        "h": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "ids": torch.arange(11, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "extra": torch.ones(2),
    }
    path = str(tmp_path / "t.safetensors")
    write_tensors(path, tensors)
    ref = load_file(path)
    targets = {k: torch.full_like(v, 9) for k, v in ref.items() if k != "extra"}
    targets["w"] = torch.zeros(5, 7, dtype=torch.bfloat16)  # cast on the way, as load_state_dict's copy_ does
    assert sorted(read_into(path, targets)) == sorted(tensors)
    for k, t in targets.items():
        expect = torch.empty_like(t).copy_(ref[k])
        assert t.dtype == expect.dtype and torch.equal(t, expect), k
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 4)
    with pytest.raises(ValueError, match="cut short"):
        read_into(path, {k: torch.empty_like(v) for k, v in ref.items()})
