"""Small, realistic rollout archives built with the project's own write_shard, plus the ground truth.

Step 0 is written in schema version 1 (tests/shard_v1.py: an archive begun by hpc-rlhf 0.1.0), step 1
in version 2 (tests/shard_v2.py), the later steps in the current version (3), with two reward sources
`judge` (weight 1) and `correct` (weight 0.5, the same within a group) and `reward` their weighted sum:
every reader sees one archive. Planted for the group diagnostics: in version 3 the two samples of the
second group (rows 2 and 3) of every shard have equal rewards.

The truth is a plain list of per-sample dicts (tokens as Python lists, float32-cast log-probs) kept
beside the archive; tests compute their expectations from it with numpy / Python sets, never with the
archive code under test.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from shard_v1 import write_shard_v1
from shard_v2 import write_shard_v2

from hpc_rlhf.rollout.shard import pack_ragged, write_shard

WORDS = [f"w{i}" for i in range(40)]
SPECIAL = ["[UNK]", "[PAD]", "</s>"]
VOCAB = {t: i for i, t in enumerate(SPECIAL + WORDS)}
EOS = VOCAB["</s>"]
STEPS = 5
SHARDS = 3
LAG = 1  # policy_version = max(step - LAG, 0): several steps share version 0
GEN_ONLY = (4, 2)  # (step, shard) that was generated but never scored
V1_STEPS = (0,)  # steps written in schema version 1
V2_STEPS = (1,)  # ... in schema version 2; the rest in version 3
SOURCES, WEIGHTS = ["judge", "correct"], [1.0, 0.5]  # version 3's reward sources


def _plant_sources(samples: list[dict], step: int) -> None:
    """Per-source values of one shard's samples, `reward` = their weighted sum (float64, then float32);
    versions 1-2: the reward is the one legacy source `rm`."""
    if step in V1_STEPS + V2_STEPS:
        for s in samples:
            s["sources"] = {"rm": s["reward"]}
        return
    for i, s in enumerate(samples):
        rm = samples[2]["sources"]["judge"] if i == 3 else s["reward"]  # rows 2 and 3: one zero-variance group
        correct = np.float32((i // 2) % 2 == 0)
        s["sources"] = {"judge": np.float32(rm), "correct": correct}
        s["reward"] = np.float32(np.float64(rm) * WEIGHTS[0] + np.float64(correct) * WEIGHTS[1])


def make_tokenizer(folder: str) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    fast.save_pretrained(folder)


def _sample(rng: np.random.Generator, version: int, n_resp: int, looping: bool, eos: bool) -> dict:
    prompt = rng.integers(3, len(VOCAB), rng.integers(3, 9)).tolist()
    if looping and n_resp >= 4:
        pat = rng.integers(3, len(VOCAB), 2).tolist()
        resp = [pat[i % 2] for i in range(n_resp)]
    else:
        resp = rng.integers(3, len(VOCAB), n_resp).tolist()
    if eos and n_resp > 0:
        resp[-1] = EOS
    gen = (-rng.exponential(1.0, n_resp)).astype(np.float32)
    ref = (gen - rng.normal(0.05 * (version + 1), 0.1, n_resp)).astype(np.float32)
    return {
        "prompt_tokens": prompt,
        "response_tokens": resp,
        "gen_logprobs": gen,
        "ref_logprobs": ref,
        "reward": np.float32(rng.normal(0.4 * version, 0.3)),
        "eos": int(eos and n_resp > 0),
    }


def build_archive(run_dir: str, seed: int = 0, tokenizer: bool = True) -> list[dict]:
    """Write RUN_DIR/{rollouts,tokenizer,config.yaml}; return the truth: one dict per sample, in no order."""
    rng = np.random.default_rng(seed)
    truth = []
    for step in range(STEPS):
        version = max(step - LAG, 0)
        folder = os.path.join(run_dir, "rollouts", f"step_{step:06d}")
        for shard in range(SHARDS):
            n = int(rng.integers(5, 13))
            samples = []
            for i in range(n):
                if step == 1 and shard == 0 and i == 0:
                    n_resp = 0  # an empty response (edge case for the per-sample sums)
                elif i == 1:
                    n_resp = 2  # shorter than a 3-gram
                else:
                    n_resp = int(rng.integers(3, 12 + 3 * version))
                s = _sample(rng, version, n_resp, looping=rng.random() < 0.1 + 0.2 * version, eos=rng.random() < 0.7)
                s.update(
                    prompt_index=step * 100 + shard * 10 + i // 2,
                    sample_index=i % 2,
                    policy_version=version,
                    step=step,
                    seed=int(rng.integers(0, 2**40)),
                    shard=shard,
                    row=i,
                )
                samples.append(s)
            _plant_sources(samples, step)
            pt, po = pack_ragged([np.array(s["prompt_tokens"]) for s in samples], "int32")
            rt, ro = pack_ragged([np.array(s["response_tokens"]) for s in samples], "int32")
            data = {
                "prompt_index": np.array([s["prompt_index"] for s in samples]),
                "sample_index": np.array([s["sample_index"] for s in samples]),
                "policy_version": np.full(n, version),
                "step": np.full(n, step),
                "seed": np.array([s["seed"] for s in samples]),
                "prompt_len": np.diff(po),
                "response_len": np.diff(ro),
                "eos": np.array([s["eos"] for s in samples]),
                "prompt_offsets": po,
                "response_offsets": ro,
                "prompt_tokens": pt,
                "response_tokens": rt,
                "gen_logprobs": np.concatenate([s["gen_logprobs"] for s in samples]),
                "ref_logprobs": np.concatenate([s["ref_logprobs"] for s in samples]),
                "reward": np.array([s["reward"] for s in samples], dtype=np.float32),
                "group_id": np.array([s["prompt_index"] for s in samples]),
                "reward_sources": np.array([list(s["sources"].values()) for s in samples], dtype=np.float32),
            }
            attrs = {
                "run_id": "test-run",
                "policy_version": version,
                "step": step,
                "shard_index": shard,
                "num_samples": n,
                "config_fingerprint": "abc",
            }
            write = write_shard_v1 if step in V1_STEPS else write_shard_v2 if step in V2_STEPS else write_shard
            os.makedirs(folder, exist_ok=True)
            sources = {} if step in V1_STEPS + V2_STEPS else {"reward_sources": SOURCES, "reward_weights": WEIGHTS}
            write(
                os.path.join(folder, f"gen_{shard:04d}.h5"),
                data,
                {**attrs, "kind": "generated", "producer_role": "generate", "producer_rank": 0},
            )
            scored = (step, shard) != GEN_ONLY
            if scored:
                write(
                    os.path.join(folder, f"scored_{shard:04d}.h5"),
                    data,
                    {**attrs, **sources, "kind": "scored", "producer_role": "score", "producer_rank": 1},
                )
            for s in samples:
                s["scored"] = scored
                s["group_id"] = s["prompt_index"]
                if not scored:
                    s["reward"] = np.float32(np.nan)
                    s["sources"] = {}
            truth += samples
    if tokenizer:
        make_tokenizer(os.path.join(run_dir, "tokenizer"))
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write("run_dir: test\nseed: 0\n")
    return truth


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    """(run_dir, truth) of a healthy archive. Read-only: copy it before damaging anything."""
    d = str(tmp_path_factory.mktemp("arch") / "run")
    truth = build_archive(d)
    return d, truth


def flip_bytes(path: str, field: str) -> None:
    """Corrupt bytes in the middle of dataset `field`'s first chunk (fletcher32 catches it on read).

    XOR with 0x5A, not 0xFF: fletcher32 sums 16-bit words modulo 65535, so it cannot tell a 0x0000
    word from 0xFFFF, and offsets/small ids are mostly zero bytes."""
    with h5py.File(path, "r") as f:
        info = f[field].id.get_chunk_info(0)
        off, size = info.byte_offset, info.size
    with open(path, "r+b") as fh:
        fh.seek(off + size // 2)
        b = fh.read(4)
        fh.seek(off + size // 2)
        fh.write(bytes(x ^ 0x5A for x in b))


@pytest.fixture()
def damaged(archive, tmp_path):
    """A copy of the archive with: flipped bytes, a truncated file, a left-over tmp file, a missing field,
    inconsistent offsets. Returns (run_dir, truth, {what: relative path})."""
    src, truth = archive
    d = str(tmp_path / "run")
    shutil.copytree(src, d)
    r = os.path.join(d, "rollouts")
    bad = {
        "flipped": "step_000001/scored_0001.h5",  # its gen twin is intact: readers fall back to it
        "truncated": "step_000002/scored_0000.h5",
        "truncated_gen": "step_000002/gen_0000.h5",  # both gone: the (step, shard) is skipped
        "missing_field": "step_000003/scored_0001.h5",
        "bad_offsets": "step_000000/gen_0002.h5",  # version 1; shadowed by its scored twin: only verify sees it
        "temporary": "step_000003/.scored_0002.h5.tmp-4242",
    }
    flip_bytes(os.path.join(r, bad["flipped"]), "response")
    for k in ("truncated", "truncated_gen"):
        p = os.path.join(r, bad[k])
        size = os.path.getsize(p)
        with open(p, "r+b") as fh:
            fh.truncate(size // 2)
    with h5py.File(os.path.join(r, bad["missing_field"]), "r+", locking=False) as f:  # a table lacking a column
        t = f["response"][()]
        del f["response"]
        f["response"] = t[["response_tokens", "gen_logprobs"]]
    with h5py.File(os.path.join(r, bad["bad_offsets"]), "r+", locking=False) as f:
        o = f["response_offsets"][()]
        o[2], o[3] = o[3], o[2]
        f["response_offsets"][...] = o
    with open(os.path.join(r, bad["temporary"]), "wb") as fh:
        fh.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return d, truth, bad
