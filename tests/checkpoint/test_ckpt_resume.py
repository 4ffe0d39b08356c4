"""Checkpoints of real (single-process) runs: a damaged latest checkpoint falls back and still ends
bit-identical, the time trigger, config changes on resume, disk full during a training checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import zipfile

import pytest
import torch

from hpc_rlhf.checkpoint.store import MARKER, find_latest, list_checkpoints
from hpc_rlhf.checkpoint.train_state import read_optim
from hpc_rlhf.config import load_config
from hpc_rlhf.errors import CheckpointError
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.roles.trainer_loop import TrainSession
from hpc_rlhf.rollout.ledger import truncate_jsonl
from tests.conftest import TINY, cli, need

SINGLE = ["runtime.launcher=none", "total_steps=4", "checkpoint.every_steps=1", "checkpoint.keep_last=3"]


def sha(run_dir) -> str:
    return hashlib.sha256(open(os.path.join(run_dir, "final", "policy", "model.safetensors"), "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_rm):
    run = tmp_path_factory.mktemp("ckpt") / "base"
    cli("train", TINY, f"run_dir={run}", *tiny_rm["overrides"], *SINGLE)
    return run


def copy_run(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def test_a_checkpoint_holds_everything_a_resume_needs(base_run):
    assert [c.step for c in list_checkpoints(str(base_run))] == [2, 3, 4]
    ck = base_run / "checkpoints" / "step_000003"
    files = set(os.listdir(ck))
    want = {"policy.safetensors", "value.safetensors", "optim.safetensors", "optim.json", "state.json"}
    assert want | {"ledger.jsonl", "shards.json", "COMMITTED", "config.yaml"} <= files
    assert "optim.pt" not in files  # no pickle: optim.json is the optimizer state's skeleton
    st = json.load(open(ck / "state.json"))
    assert st["step"] == 3 and st["version"] == 3
    assert st["data_cursor"] == {"next_step": 3, "prompt_position": 24, "pass": 0, "within_pass": 24}
    opt = read_optim(str(ck))
    assert {"opt_policy", "opt_value", "sched_policy", "sched_value", "kl_ctl", "torch_rng"} <= set(opt)
    shards = json.load(open(ck / "shards.json"))
    assert shards["2"] == {"generated": [0, 1, 2, 3], "scored": [0, 1, 2, 3], "consumed": [0, 1, 2, 3]}
    assert [json.loads(x)["step"] for x in open(ck / "ledger.jsonl")] == [0, 1, 2]
    # configs/tiny.yaml lists the demo's gold reward in logging.step_metrics: every step logs it
    assert all("gen/gold_reward_mean" in json.loads(x) for x in open(base_run / "metrics.jsonl"))


CRITIC_FREE = ["algo.name=grpo", "algo.kl_loss=k3", "algo.loss_agg=seq_mean_token_mean"]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_rm):
    run = tmp_path_factory.mktemp("ckpt") / "grpo"
    cli("train", TINY, f"run_dir={run}", *tiny_rm["overrides"], *SINGLE, *CRITIC_FREE)
    return run


def test_a_critic_free_checkpoint_holds_no_value_model_and_resumes_bit_identically(grpo_run, tmp_path):
    assert [c.step for c in list_checkpoints(str(grpo_run))] == [2, 3, 4]
    for c in list_checkpoints(str(grpo_run)):
        files = set(os.listdir(c.path))
        assert "policy.safetensors" in files and not {f for f in files if f.startswith("value")}, files
        assert not [f for f in json.load(open(os.path.join(c.path, MARKER)))["files"] if "value" in f]
        assert set(read_optim(c.path)) == {"opt_policy", "sched_policy", "kl_ctl", "torch_rng"}
    metrics = [json.loads(x) for x in open(grpo_run / "metrics.jsonl")]
    assert all("ppo/value_loss" not in m and "algo/kl_loss" in m and "algo/uniform_groups" in m for m in metrics)
    run = copy_run(grpo_run, tmp_path)
    for gone in ("checkpoints/step_000003", "checkpoints/step_000004", "final"):
        shutil.rmtree(run / gone)
    proc = cli("resume", str(run), "algo.name=rloo", check=False)  # the algorithm may not change on resume
    assert proc.returncode == 2 and "algo.name: 'grpo' -> 'rloo'" in proc.stderr, proc.stderr
    cli("resume", str(run))
    assert sha(run) == sha(grpo_run)


DAMAGE = {
    "corrupted": lambda p: p.write_bytes(
        p.read_bytes()[:100] + bytes([p.read_bytes()[100] ^ 1]) + p.read_bytes()[101:]
    ),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_and_the_run_ends_bit_identical(base_run, tmp_path, kind):
    run = copy_run(base_run, tmp_path)
    DAMAGE[kind](run / "checkpoints" / "step_000004" / "policy.safetensors")
    shutil.rmtree(run / "final")
    proc = cli("resume", str(run))
    assert "warning: checkpoint" in proc.stderr and "step_000004" in proc.stderr and "falling back" in proc.stderr
    assert sha(run) == sha(base_run)
    assert all(c.valid for c in list_checkpoints(str(run)))  # step 4 was written again
    assert [json.loads(x)["step"] for x in open(run / "ledger.jsonl")] == [0, 1, 2, 3]


def test_a_run_resumed_across_the_shard_format_upgrade_reuses_its_version_1_shards(base_run, tmp_path):
    """Shards of steps after the checkpoint, left in schema version 1 by hpc-rlhf 0.1.0, are reused
    as they are (not regenerated) and the run still ends bit-identical."""
    import glob

    from shard_v1 import write_shard_v1

    from hpc_rlhf.rollout.shard import read_attrs, read_shard

    run = copy_run(base_run, tmp_path)
    for gone in ("checkpoints/step_000003", "checkpoints/step_000004", "final"):
        shutil.rmtree(run / gone)
    old = sorted(glob.glob(f"{run}/rollouts/step_00000[23]/*.h5"))
    assert len(old) == 16
    for path in old:
        write_shard_v1(path, *read_shard(path))
    cli("resume", str(run))
    assert sha(run) == sha(base_run)
    assert sorted(glob.glob(f"{run}/rollouts/step_00000[23]/*.h5")) == old
    assert all(read_attrs(p)["schema_version"] == 1 for p in old)


def test_a_changed_config_is_refused_with_a_diff_and_safe_keys_may_change(base_run, tmp_path, tiny_rm):
    run = copy_run(base_run, tmp_path)
    proc = cli("train", TINY, f"run_dir={run}", *tiny_rm["overrides"], *SINGLE, "ppo.lr=0.5", "seed=3", check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "ppo.lr" in err and "-> 0.5" in err and "seed: 0 -> 3" in err and "new run_dir" in err
    assert len(err.splitlines()) == 1
    # total_steps, logging and checkpoint intervals are safe to change: the run continues
    cli("resume", str(run), "total_steps=5", "checkpoint.every_steps=2", "logging.progress=false")
    assert [json.loads(x)["step"] for x in open(run / "ledger.jsonl")] == [0, 1, 2, 3, 4]
    assert find_latest(str(run)).step == 5


def _recommit(folder, gone: tuple[str, ...] = ()) -> None:
    """Rewrite a checkpoint's COMMITTED manifest for files replaced or removed since it was written
    (as a checkpoint copied from elsewhere would pass validation)."""
    with open(os.path.join(folder, MARKER)) as f:
        manifest = json.load(f)
    for name in gone:
        del manifest["files"][name]
    for name in manifest["files"]:
        raw = open(os.path.join(folder, name), "rb").read()
        manifest["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    with open(os.path.join(folder, MARKER), "w") as f:
        json.dump(manifest, f)


def test_a_checkpoint_of_the_previous_format_resumes_bit_identically(base_run, tmp_path):
    """Until optim.json, the skeleton of the optimizer state was a torch.save pickle, optim.pt, beside
    optim.safetensors. It loads with torch.load(weights_only=True): plain dicts, lists, tuples, numbers,
    strings and None, no class that needs torch.serialization.add_safe_globals."""
    from hpc_rlhf.checkpoint import exact_json

    run = copy_run(base_run, tmp_path)
    for gone in ("checkpoints/step_000003", "checkpoints/step_000004", "final"):
        shutil.rmtree(run / gone)
    ck = run / "checkpoints" / "step_000002"
    skeleton = exact_json.loads((ck / "optim.json").read_text())
    torch.save(skeleton, ck / "optim.pt")  # the previous writer
    os.unlink(ck / "optim.json")
    _recommit(ck, gone=("optim.json",))
    assert torch.load(ck / "optim.pt", weights_only=True) == skeleton
    cli("resume", str(run))
    assert sha(run) == sha(base_run)
    assert "optim.json" in os.listdir(run / "checkpoints" / "step_000004")


class _Plant:
    """A pickle payload: unpickling it creates the file `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_in_a_checkpoint_is_refused_without_running(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    shutil.rmtree(run / "final")
    ck = run / "checkpoints" / "step_000004"
    marker = tmp_path / "pwned"
    planted = ck / "optim.pt"
    torch.save({"opt_policy": _Plant(str(marker))}, planted)
    os.unlink(ck / "optim.json")  # else optim.pt is not even read
    _recommit(ck, gone=("optim.json",))
    assert find_latest(str(run)).step == 4  # it passes the sha256 check
    proc = cli("resume", str(run), check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("error: checkpoint file") and str(planted) in err[0] and "refused" in err[0]
    assert not marker.exists()
    cfg = load_config(str(run / "config.yaml"), [f"run_dir={run}"])
    with pytest.raises(CheckpointError, match="optim.pt' was refused"):  # a rank reads it the same way
        TrainSession(cfg, str(run), torch.device("cpu"), DataParallel(0, 1), lead=True)
    assert not marker.exists()
    with zipfile.ZipFile(planted) as z:  # the payload is live: plain unpickling of it creates the marker
        pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    assert marker.exists()


def test_checkpoints_every_m_minutes(tmp_path, tiny_rm):
    run = tmp_path / "r"
    over = ["checkpoint.every_steps=0", "checkpoint.every_min=0.00001", "checkpoint.keep_last=4"]
    cli("train", TINY, f"run_dir={run}", *tiny_rm["overrides"], *SINGLE, *over)
    assert [c.step for c in list_checkpoints(str(run))] == [1, 2, 3, 4]


def test_single_process_run_stops_on_sigterm_with_the_requeue_status(tmp_path, tiny_rm):
    import sys
    import time

    run = tmp_path / "r"
    args = [
        "train",
        TINY,
        f"run_dir={run}",
        *tiny_rm["overrides"],
        *SINGLE,
        "total_steps=40",
        "checkpoint.every_steps=0",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "hpc_rlhf.launch.cli", *args], stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before 2 steps"
        time.sleep(0.05)
    proc.send_signal(15)  # SIGTERM, as Slurm sends on preemption
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    done = len(metrics.read_text().splitlines())
    assert find_latest(str(run)).step == done  # checkpointed at the step boundary it stopped at
    assert "stopped after a checkpoint; continue with: hpc-rlhf resume" in err


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"st')
    truncate_jsonl(str(p), 2)
    assert p.read_text() == '{"step": 0}\n{"step": 1}\n'
    p.write_text('{"step": 0}\n{"step": 1}')  # no trailing newline: completed
    truncate_jsonl(str(p), 5)
    assert p.read_text() == '{"step": 0}\n{"step": 1}\n'


# -- disk full during a training checkpoint ---------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    need(p.returncode == 0, f"a size-limited tmpfs (mount: {p.stderr.strip() or p.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_training_checkpoint(small_fs, tiny_rm):
    run = small_fs / "run"
    cfg = load_config(TINY, [f"run_dir={run}", *tiny_rm["overrides"]])
    os.makedirs(run)
    sess = TrainSession(cfg, str(run), torch.device("cpu"), DataParallel(0, 1), lead=True)
    sess.checkpoint(1)
    saved = {k: v.clone() for k, v in sess.versions[0].items()}  # the held version is the live policy
    first = find_latest(str(run))
    size = first.size_bytes
    st = os.statvfs(small_fs)
    free = st.f_bavail * st.f_frsize
    with open(small_fs / "filler", "wb") as f:  # leave room for half a checkpoint
        f.write(b"\0" * (free - size // 2))
    with torch.no_grad():
        next(sess.ctx.policy.parameters()).add_(1.0)  # different weights: a different checkpoint
    with pytest.raises(CheckpointError) as e:
        sess.checkpoint(2)
    assert "No space left on device" in str(e.value) and "previous checkpoint is intact" in str(e.value)
    info = find_latest(str(run))
    assert info.step == 1 and info.valid
    os.unlink(small_fs / "filler")
    again = TrainSession(cfg, str(run), torch.device("cpu"), DataParallel(0, 1), lead=True)
    assert again.start_step == 1
    a, b = saved, {k: v for k, v in again.ctx.policy.state_dict().items() if k in saved}
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed weights are step 1's, not the failed save's
