"""What a train checkpoint holds, written and read back: RUN_DIR/checkpoints/step_S (docs/checkpointing.md).

    text = ConfigText.of(cfg)                                # the config as checkpoints write it, once
    save_train_state(run_dir, state, text, keep_last)       # TrainState -> a committed folder
    check_start(path, cfg)                                   # before any rank starts (the launcher)
    state = load_train_state(path, cfg)                      # refuses a config that may not resume it

checkpoint/checkpointer.py is the one caller of the save and load (it adds the optimizer state
from the live optimizers and each FSDP rank's own file).

The folder of step S is the state before step S (steps < S are done):

    policy.safetensors, value.safetensors   the policy (version S) and the value model (ppo only: a
                                            critic-free algorithm's checkpoint has no value file)
    train_rankRRR_of_NNN.safetensors        instead of those with train.sharding=fsdp on N > 1 train
                                            ranks: each rank's shards of policy, value and AdamW
                                            moments, written by that rank (checkpoint/rank_files.py)
    behaviour_vN.safetensors                policy versions steps >= S still sample with (max_policy_lag > 0)
    optim.safetensors + optim.json          the AdamW states and LR schedulers (policy, value if any), the KL controller, the
                                            lead's torch RNG state: every tensor in optim.safetensors, the
                                            rest in optim.json (checkpoint/exact_json.py) with placeholders
                                            naming the tensors
    state.json                              next step, policy version, data cursor (with the prompt set's
                                            sha256), config + fingerprint
    ledger.jsonl                            what steps < S consumed (rollout/ledger.py)
    shards.json                             the shard ledger: which shards of which step were generated,
                                            scored and consumed when it was written
    config.yaml                             the config, readable

No file is a pickle. Checkpoints of earlier versions still load: their optim.pt (0.1.0: the whole
state; later: the skeleton beside optim.safetensors) is read with torch.load(weights_only=True),
which builds tensors and plain data only and refuses anything else (a file whose loading would run
code) with a CheckpointError naming the file. Only the train lead writes these files (each FSDP rank
writes its own rank file first); every train rank loads. Checkpointer (checkpoint/checkpointer.py) is
the one caller.
"""

from __future__ import annotations

import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from hpc_rlhf.checkpoint import exact_json
from hpc_rlhf.checkpoint.rank_files import CheckpointTensors
from hpc_rlhf.checkpoint.store import load_json, save_checkpoint
from hpc_rlhf.checkpoint.tensorfile import join_tensors, split_tensors, write_tensors
from hpc_rlhf.config import Config, check_resumable, fingerprint, from_dict, to_dict, to_yaml
from hpc_rlhf.errors import CheckpointError, first_line
from hpc_rlhf.rundir import (
    CKPT_OPTIM,
    CKPT_OPTIM_PICKLE,
    CKPT_OPTIM_SKELETON,
    CKPT_POLICY,
    CKPT_SHARDS,
    CKPT_STATE,
    CKPT_VALUE,
    CONFIG,
    LEDGER,
    RunDir,
    behaviour_name,
    parse_shard_name,
    parse_step_name,
)

Tensors = dict[str, torch.Tensor]
OPTIM_SKELETON, OPTIM_TENSORS = CKPT_OPTIM_SKELETON, CKPT_OPTIM
LEGACY_OPTIM = CKPT_OPTIM_PICKLE  # written up to this version: a torch.save pickle (0.1.0: the whole state)


@dataclass
class TrainState:
    """A train checkpoint in memory."""

    step: int
    """The next step: steps < step are done."""
    version: int
    """Policy version (= PPO steps done) of `policy`."""
    policy: Optional[Tensors]
    """The policy; None when it lives in the train ranks' files (a sharded checkpoint, or a lazy load)."""
    value: Optional[Tensors]
    """The value model; None for a critic-free algorithm (no value.safetensors is written), or, like
    `policy`, in the train ranks' files."""
    optim: dict = field(default_factory=dict)
    """Optimizers, LR schedulers, KL controller and torch RNG state (checkpointer.optim_state, which
    Checkpointer.save_train fills in). Written: its DTensors (FSDP moments) go to the rank files, the
    rest to optim.*. Loaded lazily (`source` set): the skeleton, with placeholders naming the tensors
    in `source`."""
    behaviour: dict[int, Tensors] = field(default_factory=dict)
    """Older policy versions that steps >= step still sample with, oldest first."""
    ledger: bytes = b""
    """RUN_DIR/ledger.jsonl as of `step`."""
    data_cursor: dict = field(default_factory=dict)
    """Where the prompt stream stands (data_cursor); its prompt set's sha256 is checked on resume, the rest
    is informational."""
    train_ranks: Optional[int] = None
    """Written: the number of train ranks whose rank files the checkpoint holds (None: full files)."""
    source: Optional[CheckpointTensors] = None
    """Loaded lazily: the checkpoint's tensors by name, read one at a time (checkpoint/rank_files.py)."""


@dataclass(frozen=True)
class ConfigText:
    """The config as every checkpoint writes it, rendered once (OmegaConf takes ~15 ms per render)."""

    fingerprint: str
    as_dict: dict
    yaml: str

    @staticmethod
    def of(cfg: Config) -> ConfigText:
        return ConfigText(fingerprint(cfg), to_dict(cfg), to_yaml(cfg))


def data_cursor(next_step: int, n_prompts: int, prompts_per_step: int, prompt_set: Optional[str] = None) -> dict:
    """Where the prompt stream stands: steps < next_step consumed positions [0, next_step * P); with
    `prompt_set` (the sha256 of a prompt file's rendered set, rollout/prompt_store.py) the stream it is in."""
    pos = next_step * prompts_per_step
    cursor = {"next_step": next_step, "prompt_position": pos, "pass": pos // n_prompts, "within_pass": pos % n_prompts}
    return {**cursor, "prompt_set_sha256": prompt_set} if prompt_set else cursor


def saved_prompt_set(path: str) -> Optional[str]:
    """The prompt set's sha256 that checkpoint `path` was trained on (None: no prompt file, or a checkpoint
    written before it was kept)."""
    return load_json(path, CKPT_STATE).get("data_cursor", {}).get("prompt_set_sha256")


def save_train_state(
    run_dir: str, st: TrainState, text: ConfigText, keep_last: int, staged: Optional[dict] = None
) -> str:
    """Write `st` as the checkpoint of step st.step and commit it (checkpoint/store.py). Returns its
    folder. staged: the train ranks' files already in the staging folder (rank_files.write_rank_state)."""

    def write(folder: str) -> dict[str, tuple[str, int]]:
        skeleton, tensors = split_tensors(st.optim)
        moments = {k: t for k, t in tensors.items() if not isinstance(t, DTensor)}  # DTensors: rank files
        tensor_files = {
            **({CKPT_POLICY: st.policy} if st.policy is not None else {}),
            **({CKPT_VALUE: st.value} if st.value is not None else {}),
            OPTIM_TENSORS: moments,
            **{behaviour_name(v): t for v, t in st.behaviour.items()},
        }
        hashed = {name: write_tensors(os.path.join(folder, name), t) for name, t in tensor_files.items()}
        with open(os.path.join(folder, OPTIM_SKELETON), "w") as f:
            f.write(exact_json.dumps(skeleton))
        state = {
            "step": st.step,
            "version": st.version,
            "data_cursor": st.data_cursor,
            "behaviour_versions": list(st.behaviour),
            "train_ranks": st.train_ranks,
            "config_fingerprint": text.fingerprint,
            "config": text.as_dict,
            "saved_unix": time.time(),
        }
        with open(os.path.join(folder, CKPT_STATE), "w") as f:
            json.dump(state, f, indent=1)
        with open(os.path.join(folder, CONFIG), "w") as f:
            f.write(text.yaml)
        with open(os.path.join(folder, LEDGER), "wb") as f:
            f.write(st.ledger)
        with open(os.path.join(folder, CKPT_SHARDS), "w") as f:
            json.dump(shard_ledger(run_dir, st.ledger), f)
        return hashed

    return save_checkpoint(run_dir, st.step, write, keep_last, staged)


def check_start(path: str, cfg: Config) -> None:
    """What the launcher checks of the start checkpoint `path` before any rank starts: `cfg` may
    resume from it (else ConfigError) and its optimizer state is plain data (else CheckpointError)."""
    st = load_json(path, CKPT_STATE)
    check_resumable(from_dict(st["config"]), cfg, path)
    try:
        _optim_skeleton(path)
    except (OSError, RuntimeError) as e:
        raise unloadable(path, e) from None


def load_train_state(path: str, cfg: Config, lazy: bool = False) -> TrainState:
    """Read the checkpoint folder `path` (committed and validated by the caller). Raises ConfigError
    when `cfg` may not resume from it, CheckpointError (one line) when a file cannot be loaded.
    lazy (always for a sharded checkpoint): policy, value and the optimizer's tensors are not read;
    `source` serves them one at a time and `optim` is the skeleton."""
    st = load_json(path, CKPT_STATE)
    check_resumable(from_dict(st["config"]), cfg, path)
    try:
        source = CheckpointTensors(path)
        if lazy or source.sharded:
            behaviour = {v: load_file(os.path.join(path, behaviour_name(v))) for v in st["behaviour_versions"]}
            with open(os.path.join(path, LEDGER), "rb") as f:
                ledger = f.read()
            skeleton = _optim_skeleton(path)
            return TrainState(
                int(st["step"]), st["version"], None, None, skeleton, behaviour, ledger, st.get("data_cursor", {}),
                source.ranks, source,
            )  # fmt: skip
    except (OSError, RuntimeError, KeyError) as e:
        raise unloadable(path, e) from None
    try:
        policy = load_file(os.path.join(path, CKPT_POLICY))
        value_path = os.path.join(path, CKPT_VALUE)  # absent: a critic-free run's checkpoint
        value = load_file(value_path) if os.path.exists(value_path) else None
        optim = read_optim(path)
        behaviour = {v: load_file(os.path.join(path, behaviour_name(v))) for v in st["behaviour_versions"]}
        with open(os.path.join(path, LEDGER), "rb") as f:
            ledger = f.read()
    except (OSError, RuntimeError, KeyError) as e:
        raise unloadable(path, e) from None
    return TrainState(
        int(st["step"]), st["version"], policy, value, optim, behaviour, ledger, st.get("data_cursor", {})
    )


def read_optim(path: str) -> dict:
    """The optimizer/scheduler/KL-controller/RNG state of checkpoint folder `path`: optim.json +
    optim.safetensors, or the optim.pt of earlier versions (+ optim.safetensors when there is one)."""
    skeleton = _optim_skeleton(path)
    tensors = os.path.join(path, OPTIM_TENSORS)
    return join_tensors(skeleton, load_file(tensors) if os.path.exists(tensors) else {})


def _optim_skeleton(path: str):
    """The skeleton of the optimizer state (with tensor placeholders; 0.1.0: the whole state)."""
    js = os.path.join(path, OPTIM_SKELETON)
    if os.path.exists(js):
        try:
            with open(js) as f:
                return exact_json.loads(f.read())
        except ValueError as e:
            raise CheckpointError(f"checkpoint file '{js}' is not an optimizer state: {first_line(e)}") from None
    pt = os.path.join(path, LEGACY_OPTIM)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore")
            return torch.load(pt, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint file '{pt}' was refused: it holds more than tensors and plain data, and loading it "
            f"could run code ({_refusal(e)}); use a checkpoint written by hpc-rlhf"
        ) from None


def _refusal(e: BaseException) -> str:
    """The specific line of torch's weights-only refusal (its first lines are generic advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines[1:]):
        if not ln.startswith(("Check the documentation", "Please file an issue")):
            return ln.removeprefix("WeightsUnpickler error:").strip() or ln
    return type(e).__name__


def unloadable(path: str, e: BaseException) -> CheckpointError:
    """The one-line error of a checkpoint whose contents cannot be loaded or do not fit."""
    return CheckpointError(f"checkpoint '{path}' could not be loaded: {first_line(e)}")


def shard_ledger(run_dir: str, ledger: bytes) -> dict:
    """{step: {generated: [j..], scored: [j..], consumed: [j..]}} for every step with a shard on disk
    or in the ledger. Shards of steps >= the checkpoint's step are ones written ahead of it: a resume
    reuses them when intact (they are identical to what it would write) and rewrites them if not."""
    out: dict[str, dict[str, list[int]]] = {}
    for ln in ledger.splitlines():
        if ln.strip():
            e = json.loads(ln)
            out.setdefault(str(e["step"]), {})["consumed"] = [_shard_index(n) for n in e["shards"]]
    root = RunDir(run_dir).rollouts
    if os.path.isdir(root):
        for d in os.scandir(root):
            step = parse_step_name(d.name)
            if step is None:
                continue
            entry = out.setdefault(str(step), {})
            for f in os.scandir(d.path):
                named = parse_shard_name(f.name)
                if named is not None:
                    entry.setdefault(named[0], []).append(named[1])
    for entry in out.values():
        for k in ("generated", "scored", "consumed"):
            entry[k] = sorted(entry.get(k, []))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _shard_index(name: str) -> int:
    """J of a shard file name in the ledger (gen_J.h5 / scored_J.h5)."""
    named = parse_shard_name(name)
    if named is None:
        raise CheckpointError(f"ledger names '{name}', which is not a shard file name")
    return named[1]
