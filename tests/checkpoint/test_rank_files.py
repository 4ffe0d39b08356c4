"""Per-rank checkpoint files (train.sharding=fsdp) on their own: the dim-0 split against torch.chunk,
every tensor rebuilt or re-split for any other number of ranks (a plain loop over the rows as the
reference), the staged commit of several ranks' files (threads as ranks), and a damaged or missing
rank file: a fall-back to the previous checkpoint, a one-line error naming the file."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from hpc_rlhf.checkpoint.rank_files import CheckpointTensors, rows, write_rank_file, write_rank_state
from hpc_rlhf.checkpoint.store import find_latest, list_checkpoints, save_checkpoint
from hpc_rlhf.errors import CheckpointError, UserError
from hpc_rlhf.rundir import rank_state_name

SHAPES = {"policy/w": (5, 3), "policy/tiny": (1, 4), "value/b": (7,), "opt_policy/state/0/exp_avg": (2, 2, 2)}


def test_rows_are_torch_chunk_for_any_size_and_rank_count():
    for n in range(10):
        for ranks in range(1, 5):
            chunks = torch.arange(n).chunk(ranks) if n else []
            for r in range(ranks):
                start, stop = rows(n, r, ranks)
                want = chunks[r].tolist() if r < len(chunks) else []  # torch.chunk drops empty trailing chunks
                assert list(range(start, stop)) == want, (n, r, ranks)


def tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def parts_of(full: dict[str, torch.Tensor], rank: int, ranks: int) -> dict[str, torch.Tensor]:
    """The reference split: row by row, in a plain loop."""
    out = {}
    for k, t in full.items():
        mine = [
            t[i] for i in range(t.shape[0]) if rows(t.shape[0], rank, ranks)[0] <= i < rows(t.shape[0], rank, ranks)[1]
        ]
        out[k] = torch.stack(mine) if mine else t[:0].clone()
    return out


def gather_among(ranks: int):
    """An all-gather of bytes between `ranks` threads (what DataParallel.all_gather_bytes does over MPI)."""
    box: list[list[bytes]] = [[b""] * ranks]
    barrier = threading.Barrier(ranks)

    def make(rank: int):
        def gather(data: bytes) -> list[bytes]:
            barrier.wait()
            box[0][rank] = data
            barrier.wait()
            out = list(box[0])
            barrier.wait()
            return out

        return gather

    return make


def commit_sharded(run, step: int, full: dict[str, torch.Tensor], ranks: int, whole=None) -> str:
    """`ranks` threads write their parts of `full` (rank 0 also `whole`), the lead commits the folder."""
    make = gather_among(ranks)
    staged, errors = {}, []

    def rank_main(r: int) -> None:
        try:

            def write(folder):
                shapes = {k: list(t.shape) for k, t in full.items()}
                return write_rank_file(folder, r, ranks, parts_of(full, r, ranks), shapes, whole if r == 0 else None)

            got = write_rank_state(str(run), step, r, ranks, write, make(r))
            if r == 0:
                staged.update(got)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(ranks)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert set(staged) == {rank_state_name(r, ranks) for r in range(ranks)}

    def lead_files(folder):
        with open(os.path.join(folder, "state.json"), "w") as f:
            f.write("{}")

    return save_checkpoint(str(run), step, lead_files, keep_last=2, staged=staged)


@pytest.mark.parametrize("written_by", [1, 2, 3])
def test_every_tensor_rebuilds_and_resplits_for_any_rank_count(tmp_path, written_by):
    full = tensors(written_by)
    step = torch.tensor(7.0)
    path = commit_sharded(tmp_path, 2, full, written_by, whole={"opt_policy/state/0/step": step})
    src = CheckpointTensors(path)
    assert src.sharded and src.ranks == written_by
    for k, t in full.items():
        assert src.shape(k) == list(t.shape)
        assert torch.equal(src.full(k), t)
        for ranks in (1, 2, 3):
            for r in range(ranks):
                assert torch.equal(src.part(k, r, ranks), parts_of(full, r, ranks)[k]), (k, r, ranks)
    assert torch.equal(src.full("opt_policy/state/0/step"), step)
    assert sorted(src.names("policy")) == ["policy/tiny", "policy/w"]
    assert list_checkpoints(str(tmp_path))[0].valid  # the manifest lists and checks every rank file


DAMAGE = {
    "corrupted": (lambda p: p.write_bytes(p.read_bytes()[:-4] + b"\0\0\0\0"), "fails its sha256 check"),
    "missing": (lambda p: p.unlink(), "is missing"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_rank_file_falls_back_to_the_previous_checkpoint(tmp_path, capsys, kind):
    commit_sharded(tmp_path, 2, tensors(0), 2)
    newest = commit_sharded(tmp_path, 4, tensors(1), 2)
    damage, words = DAMAGE[kind]
    damage(tmp_path / "checkpoints" / "step_000004" / rank_state_name(1, 2))
    info = find_latest(str(tmp_path))
    assert info.step == 2 and info.valid
    err = capsys.readouterr().err
    assert f"file {rank_state_name(1, 2)} {words}" in err and "step_000004" in err and "falling back" in err
    if kind == "missing":  # read without the manifest check: a one-line error naming the file
        with pytest.raises(CheckpointError) as e:
            CheckpointTensors(newest)
        assert isinstance(e.value, UserError) and "\n" not in str(e.value)
        assert rank_state_name(1, 2) in str(e.value) and "is missing" in str(e.value)


def test_a_rank_that_cannot_write_fails_the_checkpoint_on_every_rank_and_keeps_the_previous(tmp_path):
    commit_sharded(tmp_path, 2, tensors(0), 2)
    make = gather_among(2)
    errors: list[BaseException] = []

    def rank_main(r: int) -> None:
        def write(folder):
            if r == 1:
                raise OSError(28, "No space left on device")
            shapes = {k: list(t.shape) for k, t in tensors(1).items()}
            return write_rank_file(folder, r, 2, parts_of(tensors(1), r, 2), shapes)

        try:
            write_rank_state(str(tmp_path), 4, r, 2, write, make(r))
        except CheckpointError as e:
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(errors) == 2 and all("train rank 1" in str(e) and "No space left" in str(e) for e in errors)
    assert [c.step for c in list_checkpoints(str(tmp_path))] == [2]
    assert [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(".tmp-")] == []
