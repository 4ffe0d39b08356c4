"""The checkpoint store on its own: atomic commit, `latest`, keep-last-K, validation and fall-back,
left-over temporaries, and a disk that fills up during a save (a size-limited tmpfs)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from hpc_rlhf.checkpoint.store import (
    MARKER,
    find_latest,
    list_checkpoints,
    save_checkpoint,
)
from hpc_rlhf.errors import CheckpointError
from hpc_rlhf.rundir import clean_temporaries, remove_tree, wait_for_removals
from tests.conftest import cli, need


def writer(payload: bytes, step: int):
    def write(folder: str) -> None:
        with open(os.path.join(folder, "weights.bin"), "wb") as f:
            f.write(payload)
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump({"step": step}, f)

    return write


def save(run, step, size=1000, keep=2):
    return save_checkpoint(str(run), step, writer(bytes([step % 256]) * size, step), keep_last=keep)


def steps(run):
    return [c.step for c in list_checkpoints(str(run))]


def test_commit_latest_and_keep_last_k(tmp_path):
    for s in (2, 4, 6, 8):
        path = save(tmp_path, s, keep=3)
    assert steps(tmp_path) == [4, 6, 8]
    assert open(tmp_path / "checkpoints" / "latest").read().strip() == "step_000008"
    manifest = json.load(open(os.path.join(path, MARKER)))
    assert set(manifest["files"]) == {"weights.bin", "state.json"}
    assert manifest["step"] == 8
    assert find_latest(str(tmp_path)).step == 8
    wait_for_removals()  # pruned folders are deleted on a thread: wait for it, then nothing may be left
    assert [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(".")] == []
    assert all(c.valid and c.size_bytes > 1000 for c in list_checkpoints(str(tmp_path)))


def test_resaving_a_step_replaces_it(tmp_path):
    save(tmp_path, 2)
    save(tmp_path, 4, size=10)
    save(tmp_path, 4, size=20)
    info = find_latest(str(tmp_path))
    assert info.step == 4 and os.path.getsize(os.path.join(info.path, "weights.bin")) == 20


def _flip(path):
    with open(path, "r+b") as f:
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "corrupted": (lambda d: _flip(d / "weights.bin"), "sha256"),
    "truncated": (lambda d: _truncate(d / "weights.bin"), "truncated"),
    "file missing": (lambda d: os.unlink(d / "state.json"), "missing"),
    "uncommitted": (lambda d: os.unlink(d / MARKER), "no COMMITTED marker"),
    "bad marker": (lambda d: (d / MARKER).write_text("{not json"), "unreadable"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, kind):
    save(tmp_path, 2)
    save(tmp_path, 4)
    damage, words = DAMAGE[kind]
    damage(tmp_path / "checkpoints" / "step_000004")
    info = find_latest(str(tmp_path))
    assert info.step == 2 and info.valid
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "step_000004" in err and words in err and "falling back" in err
    bad = [c for c in list_checkpoints(str(tmp_path)) if not c.valid]
    assert [c.step for c in bad] == [4] and words in bad[0].problem


def test_find_latest_hashes_only_what_it_needs(tmp_path, monkeypatch):
    """Every rank looks for the latest checkpoint at start: older ones are not read once a newer one
    is valid (a run keeps several multi-GB checkpoints)."""
    from hpc_rlhf.checkpoint import store

    for s in (2, 4, 6):
        save(tmp_path, s, keep=3)
    seen = []
    real = store.validate
    monkeypatch.setattr(store, "validate", lambda path: seen.append(os.path.basename(path)) or real(path))
    assert find_latest(str(tmp_path)).step == 6 and seen == ["step_000006"]
    seen.clear()
    _flip(tmp_path / "checkpoints" / "step_000006" / "weights.bin")
    assert find_latest(str(tmp_path), quiet=True).step == 4 and seen == ["step_000006", "step_000004"]


def test_nothing_valid_means_no_checkpoint(tmp_path):
    save(tmp_path, 2)
    _flip(tmp_path / "checkpoints" / "step_000002" / "weights.bin")
    assert find_latest(str(tmp_path), quiet=True) is None


def test_a_failing_writer_leaves_no_trace_and_keeps_its_error(tmp_path):
    save(tmp_path, 2)

    def broken(folder):
        open(os.path.join(folder, "half.bin"), "wb").write(b"x" * 100)
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug in the writer"):  # not an I/O error: not disguised
        save_checkpoint(str(tmp_path), 4, broken)
    assert steps(tmp_path) == [2]
    assert [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(".tmp-")] == []
    assert open(tmp_path / "checkpoints" / "latest").read().strip() == "step_000002"


def test_leftovers_of_a_killed_writer_are_ignored_then_swept(tmp_path):
    save(tmp_path, 2)
    ck = tmp_path / "checkpoints"
    (ck / ".tmp-step_000004-999999").mkdir()  # a save killed before its commit
    (ck / ".tmp-step_000004-999999" / "weights.bin").write_bytes(b"partial")
    (ck / ".tmp-del-step_000000-999999-1").mkdir()  # a deletion killed half-way
    (ck / ".latest.tmp-999999").write_text("step_000004")
    (ck / "step_000001").mkdir()  # a marker-less folder older than what is kept
    roll = tmp_path / "rollouts" / "step_000003"
    roll.mkdir(parents=True)
    (roll / ".gen_0001.h5.tmp-999999").write_bytes(b"partial shard")
    (roll / "gen_0000.h5").write_bytes(b"a shard")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / ".policy_v000003.safetensors.tmp-999999").write_bytes(b"w")
    (tmp_path / ".ledger.jsonl.tmp-999999").write_text("{")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / ".tmp-policy-999999").mkdir()
    assert find_latest(str(tmp_path)).step == 2
    removed = clean_temporaries(str(tmp_path))
    assert len(removed) == 7
    assert (roll / "gen_0000.h5").exists() and (ck / "step_000002").exists() and (ck / "step_000001").exists()
    save(tmp_path, 4)  # prune drops the marker-less step_000001 (older than the kept ones)
    assert sorted(os.listdir(ck)) == ["latest", "step_000002", "step_000004"]


def test_remove_tree_renames_first(tmp_path):
    d = tmp_path / "step_000002"
    d.mkdir()
    (d / "x").write_text("x")
    remove_tree(str(d))
    assert os.listdir(tmp_path) == []


def test_checkpoints_command_lists_step_time_size_validity(tmp_path):
    save(tmp_path, 2, size=300_000)
    save(tmp_path, 4, size=300_000)
    _flip(tmp_path / "checkpoints" / "step_000004" / "weights.bin")
    out = cli("checkpoints", str(tmp_path)).stdout.splitlines()
    assert out[0] == "owner: none (no run holds this run dir)"
    assert out[1].split() == ["step", "saved", "size_MB", "valid"]
    assert out[2].split()[0] == "2" and out[2].split()[3] == "0.30" and out[2].endswith("yes")
    assert out[3].split()[0] == "4" and "NO: file weights.bin fails its sha256 check" in out[3]
    missing = cli("checkpoints", str(tmp_path / "none"), check=False)  # a user error: one line, exit 2
    assert missing.returncode == 2 and missing.stderr.strip().endswith("does not exist"), missing.stderr


# -- disk full ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/fs (root only); skipped locally, a failure in CI, when it cannot mount."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    need(p.returncode == 0, f"a size-limited tmpfs (mount: {p.stderr.strip() or p.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("how", ["python write", "torch.save"])
def test_disk_full_during_a_save_keeps_the_previous_checkpoint(small_fs, how):
    save(small_fs, 2, size=400_000)

    def overflow(folder):
        if how == "torch.save":  # torch reports ENOSPC as 'unexpected pos ...'
            torch.save({"w": torch.zeros(300_000)}, os.path.join(folder, "optim.pt"))
        else:
            with open(os.path.join(folder, "weights.bin"), "wb") as f:
                f.write(b"\0" * 1_200_000)

    with pytest.raises(CheckpointError) as e:
        save_checkpoint(str(small_fs), 4, overflow)
    msg = str(e.value)
    assert "No space left on device" in msg and "step 4" in msg and "previous checkpoint is intact" in msg
    info = find_latest(str(small_fs))
    assert info.step == 2 and info.valid
    assert open(os.path.join(info.path, "weights.bin"), "rb").read() == bytes([2]) * 400_000
    assert [n for n in os.listdir(small_fs / "checkpoints") if n.startswith(".tmp-")] == []
    assert open(small_fs / "checkpoints" / "latest").read().strip() == "step_000002"
    save(small_fs, 6, size=400_000)  # the space came back: saving works again
    assert steps(small_fs) == [2, 6]
