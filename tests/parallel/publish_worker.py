"""Run under mpiexec -n N by tests/parallel/test_dp_memory.py: the weight publisher on an FSDP-sharded model.

Every rank builds the same tiny Llama (seeded; a 37-token vocabulary, so dim 0 of the embeddings does
not divide evenly over the ranks), untied and tied, shards a copy over the N ranks and publishes it
(rank 0 writes, the others only take part in the gathers). Rank 0 checks that the published file, its
folder view and the final export are byte for byte what save_pretrained writes for the unsharded model,
and that no more than one gathered parameter was alive at any time. Exits 0 when all hold.
"""

from __future__ import annotations

import copy
import filecmp
import os
import sys
import weakref

import torch
from mpi4py import MPI
from transformers import AutoConfig, AutoModelForCausalLM

from hpc_rlhf.parallel import fsdp
from hpc_rlhf.parallel.dp import DataParallel
from hpc_rlhf.weights import publish

FILES = ["config.json", "generation_config.json", "model.safetensors"]


def counted(gather):
    """gather_full, counting the gathered tensors alive at once (the most ever in peak[0])."""
    alive, peak = [0], [0]

    def done() -> None:
        alive[0] -= 1

    def wrapped(t: torch.Tensor) -> torch.Tensor:
        out = gather(t)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(out, done)
        return out

    return wrapped, peak


def check(root: str, tied: bool, dp: DataParallel) -> list[str]:
    conf = AutoConfig.for_model(
        "llama", vocab_size=37, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(conf)
    sharded = fsdp.shard_model(copy.deepcopy(plain), fsdp.train_mesh(dp.size, torch.device("cpu")))
    run_dir, lead = os.path.join(root, f"tied{int(tied)}"), dp.rank == 0
    publish.gather_full, peak = counted(publish.gather_full)
    path = publish.publish_model(run_dir, 3, sharded, write=lead)
    if not lead:
        return []
    publish.write_config(run_dir, sharded)
    ref = os.path.join(root, f"ref{int(tied)}")
    plain.save_pretrained(ref)
    view = publish.version_folder(run_dir, 3)
    bad = [f"{view}/{n}" for n in FILES if not filecmp.cmp(f"{ref}/{n}", f"{view}/{n}", shallow=False)]
    bad += [] if os.path.samefile(path, f"{view}/model.safetensors") else [f"{view}: not a link to {path}"]
    bad += [] if peak[0] == 1 else [f"{peak[0]} gathered parameters alive at once"]
    return bad


def main() -> int:
    comm = MPI.COMM_WORLD
    dp = DataParallel.from_mpi(comm, torch.device("cpu"), 60)
    bad = check(sys.argv[1], False, dp) + check(sys.argv[1], True, dp)
    dp.close()
    print("\n".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
