"""The policy versions the generators may still sample with, and their publication (weights/publish.py).

    versions = PolicyVersions(run_dir, cfg.max_policy_lag, policy, publish_files=lead, hold=lead)
    versions.keep(v, tensors)                  # an older version restored from a checkpoint
    versions.keep_live(v)                      # the live policy is version v (a fresh start, a resume)
    versions.publish_initial(start_step)       # -> [(v, path)]: what generators need before step 1
    path = versions.add(v)                     # after each update: the live policy is v: publish, prune
    versions[v]                                # the CPU tensors of version v (checkpoints, in-process generator)
    versions.published(v)                      # its file, for the final export (None: none to link)

With `max_policy_lag = k` step s samples with version s - k, so versions s - k .. s are needed.
Three kinds of train rank hold them differently:

- the lead of a multi-rank run (`publish_files=True`) writes every version to RUN_DIR/weights as
  it comes, streamed from the live model, and holds no version in memory: `versions[v]` is the live
  model's own tensors for the current version (unsharded) and a read of the published file for an
  older one (a checkpoint's behaviour versions; the publisher keeps files from current - k - 1 on).
  Versions restored from a checkpoint are held only until publish_initial has written them.
- the other train ranks (`publish_files=False, hold=False`) hold nothing; under train.sharding=fsdp
  they take part in the publisher's gathers (publish_initial and add are collectives then).
- the single-rank loop (`publish_files=False, hold=True`), whose generator takes a version's tensors
  in memory, writes no file and holds the newest k + 1 versions: with k = 0 the one held version is
  the live policy's own CPU tensors (no copy; the generator loads it before the next update), with
  k > 0 older versions must be copies.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from safetensors.torch import load_file

from hpc_rlhf.models import lora
from hpc_rlhf.parallel.fsdp import is_sharded
from hpc_rlhf.weights.publish import cpu_state, prune, publish, publish_model, weights_path, write_config


class PolicyVersions:
    def __init__(
        self, run_dir: str, max_policy_lag: int, policy: torch.nn.Module, publish_files: bool, hold: bool = True
    ):
        self.run_dir, self.lag, self.policy = run_dir, max_policy_lag, policy
        self.publish_files, self.hold = publish_files, hold
        self.in_memory = hold and not publish_files  # the single-rank loop's generator reads the tensors
        self.gathers = is_sharded(policy)  # publishing is a collective of the train ranks
        self.live: Optional[int] = None  # the version the live policy is
        self.recent: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()  # held as tensors, oldest first

    def __getitem__(self, version: int) -> dict[str, torch.Tensor]:
        if version in self.recent:
            return self.recent[version]
        if version == self.live and not self.gathers:
            return cpu_state(self.policy, copy=False)  # the live policy has not changed since
        if self.publish_files and self.live is not None and self.live - self.lag - 1 <= version < self.live:
            return load_file(weights_path(self.run_dir, version))  # published, not pruned yet
        raise KeyError(f"policy version {version} is not held here (live: {self.live})")

    def keep(self, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Hold an older `version` restored from a checkpoint, to be published (or handed to the
        in-process generator); add in version order."""
        if self.hold:
            self.recent[version] = tensors

    def keep_live(self, version: int) -> None:
        """The live policy is `version` (a fresh start or a resumed checkpoint), published by publish_initial."""
        self.live = version
        self._hold_live()

    def older_than(self, version: int) -> list[int]:
        """The versions before `version` that later steps still sample with, oldest first: the behaviour
        versions a checkpoint keeps."""
        return list(range(max(0, version - self.lag), version))

    def publish_initial(self, start_step: int) -> list[tuple[int, str]]:
        """Versions max(0, start-k) .. start, which the generators need before the next update: published
        (files; the live one is a collective under FSDP) and returned as (version, weights path)."""
        out = []
        if self.publish_files:
            write_config(self.run_dir, self.policy)
        for v in range(max(0, start_step - self.lag), start_step + 1):
            if v == self.live:
                self._publish_live()
            elif self.publish_files:
                publish(self.run_dir, v, self.recent[v])
            out.append((v, weights_path(self.run_dir, v)))
        if self.publish_files:
            self.recent.clear()  # the files hold them now
        return out

    def add(self, version: int) -> str:
        """The live policy is the new `version`: hold it (in memory), publish it (a collective under FSDP)
        and prune the files of versions no step can sample with any more. Returns its weights path."""
        self.live = version
        while self.recent and len(self.recent) > self.lag:
            self.recent.popitem(last=False)
        self._hold_live()
        self._publish_live()
        if self.publish_files:
            prune(self.run_dir, version - self.lag - 1)
        return weights_path(self.run_dir, version)

    def published(self, version: int) -> Optional[str]:
        """The published file of `version` as a full model (to link as the final export), or None: no
        files (the single-rank loop) or a LoRA policy's (adapters only)."""
        if not self.publish_files or lora.is_lora(self.policy):
            return None
        return weights_path(self.run_dir, version)

    def _hold_live(self) -> None:
        if self.in_memory:  # a copy when older versions are held beside it (k > 0): the model changes
            self.recent[self.live] = cpu_state(self.policy, copy=self.lag > 0)

    def _publish_live(self) -> None:
        if self.publish_files or self.gathers:
            publish_model(self.run_dir, self.live, self.policy, write=self.publish_files)
