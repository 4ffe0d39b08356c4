"""File I/O: checkpoint save/load against a plain safetensors write/read of the same tensors, and
rollout shard write/read against a plain write/read of the same bytes (with the compression choice:
none, lzf, gzip).

    python tools/bench/io_bench.py [--repeats 7] [--out io.json]

Checkpoint: a TrainSession of the large workload (hidden 256 / 4 layers) after one optimizer step
(so both AdamW states are full), `sess.checkpoint(step)` (policy, value, behaviour versions, optim.pt,
state, manifest with sha256, fsyncs, rename, `latest`) against `safetensors.save_file` of the policy,
value and optimizer-moment tensors into one file followed by fsync; load: `sess._resume()` (find
and verify the latest checkpoint, load weights and optimizer) against `safetensors.load_file` with
every tensor copied into memory.
Shards: `write_shard` (HDF5, chunked, fletcher32, tmp + rename; and with durable=True, as
checkpoint.sync_rollouts=every_shard writes them: + fsync + fsync dir) and `read_shard` (checksums
verified) against writing the same arrays' bytes to one file with the same fsyncs (or none) and
rename, and reading it back; for a demo-size shard (16 samples), a workload shard (16 x 32 + 32
tokens) and a large synthetic shard (2000 samples, 16-64 tokens each). Runs alternate A/B; medians.
The page cache is warm (files were just written), as for the scorer and trainer reading fresh shards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def _alternate(fns: dict, repeats: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: common.median(v) for k, v in times.items()}


def _plain_write(path: str, blobs: list[bytes], durable: bool = False) -> None:
    d = os.path.dirname(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for b in blobs:
            f.write(b)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _plain_read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def checkpoint_bench(workdir: str, repeats: int) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from hpc_rlhf.config import load_config
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.parallel.dp import DataParallel
    from hpc_rlhf.roles.trainer_loop import TrainSession

    run_dir = os.path.join(workdir, "ckpt_run")
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(os.path.join(common.REPO, "configs", "demo.yaml"), common.our_overrides("large", run_dir))
    cfg, run_dir = prepare_run(cfg)
    torch.set_num_threads(common.THREADS)
    sess = TrainSession(cfg, run_dir, torch.device("cpu"), DataParallel(0, 1), lead=True)
    tr = sess.ctx
    for model, opt in ((tr.policy, tr.opt_policy), (tr.value, tr.opt_value)):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in tr.policy.state_dict().items()}
    tensors.update({f"value.{k}": v.detach().contiguous() for k, v in tr.value.state_dict().items()})
    for name, opt in (("opt_policy", tr.opt_policy), ("opt_value", tr.opt_value)):
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    tensors[f"{name}.{i}.{k}"] = v.contiguous()
    nbytes = sum(v.numel() * v.element_size() for v in tensors.values())
    plain = os.path.join(workdir, "plain.safetensors")
    step = {"n": 100}

    def save_ckpt():
        step["n"] += 1
        sess.checkpoint(step["n"])

    def save_plain():
        save_file(tensors, plain + ".tmp")
        fd = os.open(plain + ".tmp", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(plain + ".tmp", plain)

    save_plain()
    save_ckpt()
    w = _alternate({"checkpoint_save": save_ckpt, "plain_safetensors_save": save_plain}, repeats)
    r = _alternate(
        {
            "checkpoint_load": sess._resume,
            "plain_safetensors_load": lambda: {k: v.clone() for k, v in load_file(plain).items()},
        },
        repeats,
    )
    root = os.path.join(run_dir, "checkpoints")
    ck = max((os.path.join(root, d) for d in os.listdir(root) if d.startswith("step_")), key=os.path.getmtime)
    ck_bytes = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ck) for f in fs)
    return {
        "tensor_bytes": nbytes,
        "checkpoint_bytes": ck_bytes,
        **{f"{k}_s": v for k, v in {**w, **r}.items()},
        "save_ratio": w["checkpoint_save"] / w["plain_safetensors_save"],
        "load_ratio": r["checkpoint_load"] / r["plain_safetensors_load"],
    }


def _shards() -> dict:
    """name -> (data, attrs) of a scored shard (every field of the schema), random tokens/log-probs."""
    from hpc_rlhf.rollout.shard import pack_ragged

    rng = np.random.default_rng(0)

    def make(n, p_lo, p_hi, r_lo, r_hi, vocab):
        prompts = [rng.integers(4, vocab, rng.integers(p_lo, p_hi + 1)).astype(np.int32) for _ in range(n)]
        resps = [rng.integers(4, vocab, rng.integers(r_lo, r_hi + 1)).astype(np.int32) for _ in range(n)]
        pt, po = pack_ragged(prompts, "int32")
        rt, ro = pack_ragged(resps, "int32")
        lp = (-rng.exponential(3.0, len(rt))).astype(np.float32)
        data = {
            "prompt_index": np.arange(n, dtype=np.int64),
            "sample_index": np.zeros(n, dtype=np.int32),
            "policy_version": np.zeros(n, dtype=np.int64),
            "step": np.zeros(n, dtype=np.int64),
            "seed": rng.integers(0, 2**62, n, dtype=np.int64),
            "prompt_len": np.diff(po).astype(np.int32),
            "response_len": np.diff(ro).astype(np.int32),
            "eos": np.zeros(n, dtype=np.uint8),
            "prompt_offsets": po,
            "response_offsets": ro,
            "prompt_tokens": pt,
            "response_tokens": rt,
            "gen_logprobs": lp,
            "ref_logprobs": (lp + rng.normal(0, 0.05, len(lp))).astype(np.float32),
            "reward": rng.normal(0, 1, n).astype(np.float32),
        }
        data["group_id"], data["reward_sources"] = data["prompt_index"], data["reward"].reshape(n, 1)
        attrs = {
            "reward_sources": ["rm"],
            "reward_weights": [1.0],
            "kind": "scored",
            "step": 0,
            "shard_index": 0,
            "config_fingerprint": "bench",
            "run_id": "bench",
            "producer_role": "score",
            "producer_rank": 0,
            "policy_version": 0,
            "num_samples": n,
        }
        return data, attrs

    return {
        "demo size (16 samples, 4-8 + 1-16 tokens)": make(16, 4, 8, 1, 16, 100),
        "workload (16 samples, 32 + 32 tokens)": make(16, 32, 32, 32, 32, 512),
        "large (2000 samples, 16-32 + 16-64 tokens)": make(2000, 16, 32, 16, 64, 32000),
    }


def shard_bench(workdir: str, repeats: int) -> dict:
    from hpc_rlhf.rollout.shard import read_shard, write_shard

    out = {}
    for name, (data, attrs) in _shards().items():
        blobs = [np.ascontiguousarray(v).tobytes() for v in data.values()]
        nbytes = sum(len(b) for b in blobs)
        res = {"payload_bytes": nbytes}
        for comp in (None, "lzf", "gzip"):
            path = os.path.join(workdir, f"shard_{comp}.h5")
            plain = os.path.join(workdir, "plain.bin")
            write_shard(path, data, attrs, compression=comp)
            _plain_write(plain, blobs)
            fns = {
                "shard_write": lambda p=path, d=data, a=attrs, c=comp: write_shard(p, d, a, compression=c),
                "plain_write": lambda p=plain, b=blobs: _plain_write(p, b),
                "shard_read": lambda p=path: read_shard(p),
                "plain_read": lambda p=plain: _plain_read(p),
            }
            if comp is None:  # checkpoint.sync_rollouts=every_shard: each write fsynced (file and rename)
                fns["shard_write_durable"] = lambda p=path, d=data, a=attrs: write_shard(p, d, a, durable=True)
                fns["plain_write_durable"] = lambda p=plain, b=blobs: _plain_write(p, b, durable=True)
            t = _alternate(fns, repeats)
            res[str(comp)] = {
                "file_bytes": os.path.getsize(path),
                **{f"{k}_s": v for k, v in t.items()},
                **{f"{k}_MBps": nbytes / v / 1e6 for k, v in t.items()},
                "write_ratio": t["shard_write"] / t["plain_write"],
                "read_ratio": t["shard_read"] / t["plain_read"],
            }
        out[name] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    wd = args.workdir or tempfile.mkdtemp(prefix="bench_io_")
    res = {"checkpoint": checkpoint_bench(wd, args.repeats), "shards": shard_bench(wd, args.repeats)}
    c = res["checkpoint"]
    print(
        f"[io] checkpoint save {c['checkpoint_save_s']:.3f} s vs plain safetensors {c['plain_safetensors_save_s']:.3f} s "
        f"({c['save_ratio']:.2f}x); load {c['checkpoint_load_s']:.3f} s vs {c['plain_safetensors_load_s']:.3f} s "
        f"({c['load_ratio']:.2f}x)"
    )
    for name, r in res["shards"].items():
        n = r["None"]
        print(
            f"[io] shard {name}: write {n['shard_write_MBps']:.1f} MB/s (plain {n['plain_write_MBps']:.1f}), read "
            f"{n['shard_read_MBps']:.1f} MB/s (plain {n['plain_read_MBps']:.1f}); lzf {r['lzf']['shard_write_s'] * 1e3:.1f} ms "
            f"{r['lzf']['file_bytes']} B, gzip {r['gzip']['shard_write_s'] * 1e3:.1f} ms {r['gzip']['file_bytes']} B, none "
            f"{n['shard_write_s'] * 1e3:.1f} ms {n['file_bytes']} B"
        )
    if args.out:
        common.write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
