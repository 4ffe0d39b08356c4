"""The policy versions the generators may still sample with, held by the trainer, and their publication.

    versions = PolicyVersions(run_dir, cfg.max_policy_lag, publish_files=lead, hold=lead)
    versions.keep(v, tensors)                  # a version restored from a checkpoint (not published)
    versions.publish_initial(start_step)       # -> [(v, path)]: what generators need before step 1
    path = versions.add(v, cpu_state(policy))  # after each update: keep, publish, prune
    versions[v]                                # the CPU tensors of version v (checkpoints, in-process generator)

With `max_policy_lag = k` step s samples with version s - k, so the newest k + 1 versions are kept
(older ones are dropped from memory and their files pruned). `publish_files=False` (every train rank
but the lead, or the single-rank loop whose generator takes the tensors in memory) keeps the
versions without writing weight files. `hold=False` (every train rank but the lead: only the lead
checkpoints) keeps no tensors at all, only the paths. With k = 0 the caller may pass the model's own
CPU tensors (cpu_state(copy=False)): the one held version is then the live policy, no copy; with
k > 0 the older versions must be copies. Files: weights/publish.py.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from hpc_rlhf.weights.publish import prune, publish, weights_path


class PolicyVersions:
    def __init__(self, run_dir: str, max_policy_lag: int, publish_files: bool, hold: bool = True):
        self.run_dir, self.lag, self.publish_files, self.hold = run_dir, max_policy_lag, publish_files, hold
        self.recent: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()  # oldest first

    def __getitem__(self, version: int) -> dict[str, torch.Tensor]:
        return self.recent[version]

    def keep(self, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Hold `version` (restored, or the initial policy) without publishing it; add in version order."""
        if self.hold:
            self.recent[version] = tensors

    def older_than(self, version: int) -> list[int]:
        """Held versions before `version`, oldest first: the behaviour versions a checkpoint keeps."""
        return [v for v in self.recent if v < version]

    def publish_initial(self, start_step: int) -> list[tuple[int, str]]:
        """Versions max(0, start-k) .. start, which the generators need before the next update:
        published (publish_files) and returned as (version, weights path)."""
        out = []
        for v in range(max(0, start_step - self.lag), start_step + 1):
            if self.publish_files:
                publish(self.run_dir, v, self.recent[v])
            out.append((v, weights_path(self.run_dir, v)))
        return out

    def add(self, version: int, tensors: dict[str, torch.Tensor]) -> str:
        """Hold the new `version`, drop versions no step can sample with any more, publish it and
        prune the files of those (publish_files). Returns its weights path."""
        while self.recent and len(self.recent) > self.lag:
            self.recent.popitem(last=False)
        if self.hold:
            self.recent[version] = tensors
        if self.publish_files:
            publish(self.run_dir, version, tensors)
            prune(self.run_dir, version - self.lag - 1)
        return weights_path(self.run_dir, version)
