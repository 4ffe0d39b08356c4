"""The run directory: every path of a run in one declaration, and the durable-write helpers.

    rd = RunDir(cfg.run_dir)
    rd.config                          # RUN_DIR/config.yaml
    rd.shard(3, 1, "scored")           # RUN_DIR/rollouts/step_000003/scored_0001.h5
    parse_shard_name("scored_0001.h5") # ("scored", 1); None for anything else
    rd.weights(7)                      # RUN_DIR/weights/policy_v000007.safetensors
    write_atomic(rd.latest, b"step_000010\n")

`ENTRIES` is the contract: each path of a run, who writes it and what it holds. docs/run_directory.md
(and docs/architecture.md) show `markdown_table()`, and a test keeps them equal. Every module takes its
run-directory paths from here: a test fails when one of these names appears as a literal elsewhere in
hpc_rlhf/. Writers follow one rule (crash consistency): write to a temporary name that carries
`TMP_MARK`, fsync, `os.replace` into place, fsync the folder; readers trust only committed names, and
`clean_temporaries` sweeps what a killed writer left. This module imports nothing else of the package.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

TMP_MARK = ".tmp-"  # in the name of every file or folder not yet renamed into place

# names inside RUN_DIR (and inside its checkpoint folders); only this module spells them
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"  # what a saved fast tokenizer folder holds (transformers' name)
PROMPTS = "prompts.h5"
ROLLOUTS = "rollouts"
WEIGHTS = "weights"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
COMMITTED = "COMMITTED"
LEDGER = "ledger.jsonl"
METRICS = "metrics.jsonl"
TIMING = "timing"
ENGINE = "engine"
TENSORBOARD = "tb"
TRACKING = "tracking.json"
WANDB = "wandb"
MLRUNS = "mlruns"
FINAL = "final"
FINAL_POLICY = "policy"
REWARD_MODEL = "reward_model"
RM_REPORT = "rm_report.json"
DEMO_REPORT = "demo_report.json"
DEMO_CURVES = "demo_curves.png"
METRICS_PLOT = "metrics.png"
METRICS_PLOT_DATA = "metrics_plot.json"
SLURM = "slurm"
JOBS = "jobs.jsonl"
CODE = "code"
RANKS = ".ranks"
OWNER = "owner.json"
RECIPE = "recipe.json"
RECIPE_STAGES = ("sft", "rm", "rl")  # a recipe's stage run dirs, RUN_DIR/sft, RUN_DIR/rm, RUN_DIR/rl, in order

# names inside a checkpoint folder (checkpoints/step_SSSSSS/)
CKPT_POLICY = "policy.safetensors"
CKPT_MODEL = "model.safetensors"  # the model of a supervised stage (sft, rm): stages/loop.py
HF_WEIGHTS = CKPT_MODEL  # a Hugging Face folder's weights (final/policy/, weights/policy_vV/): transformers' name
HF_CONFIGS = ("config.json", "generation_config.json")  # a Hugging Face model folder's config files
CKPT_VALUE = "value.safetensors"
CKPT_OPTIM = "optim.safetensors"
CKPT_OPTIM_SKELETON = "optim.json"
CKPT_OPTIM_PICKLE = "optim.pt"  # written by 0.1.0 and the releases before optim.json; read, never written
CKPT_STATE = "state.json"
CKPT_SHARDS = "shards.json"
CKPT_RANK_PREFIX = "train_rank"  # train_rankRRR_of_NNN.safetensors: one train rank's FSDP shards (rank_state_name)

EVALS = "evals"  # rollouts/evals/: the eval shards (roles/evaluator.py), apart from the training steps' folders
SHARD_KINDS = {"generated": "gen", "scored": "scored", "eval": "eval"}  # shard kind -> file name prefix
_SHARD_NAME = re.compile(r"^(gen|scored|eval)_(\d+)\.h5$")
_STEP_NAME = re.compile(r"^step_(\d+)$")
_WEIGHTS_NAME = re.compile(r"^policy_v(\d+)\.safetensors$")
_WEIGHTS_FOLDER = re.compile(r"^policy_v(\d+)$")
_BEHAVIOUR_NAME = re.compile(r"^behaviour_v(\d+)\.safetensors$")
_RANK_STATE_NAME = re.compile(r"^train_rank(\d+)_of_(\d+)\.safetensors$")


def step_name(step: int) -> str:
    """Folder name of a step (rollouts/) or of the checkpoint taken before it (checkpoints/)."""
    return f"step_{step:06d}"


def parse_step_name(name: str) -> Optional[int]:
    m = _STEP_NAME.match(name)
    return int(m.group(1)) if m else None


def shard_name(shard: int, kind: str) -> str:
    """kind 'generated' -> gen_JJJJ.h5, 'scored' -> scored_JJJJ.h5, 'eval' -> eval_JJJJ.h5."""
    return f"{SHARD_KINDS[kind]}_{shard:04d}.h5"


def parse_shard_name(name: str) -> Optional[tuple[str, int]]:
    """(kind, shard index) of a shard file name (a base name), or None when it is not one."""
    m = _SHARD_NAME.match(name)
    if m is None:
        return None
    return {v: k for k, v in SHARD_KINDS.items()}[m.group(1)], int(m.group(2))


def weights_name(version: int) -> str:
    return f"policy_v{version:06d}.safetensors"


def parse_weights_name(name: str) -> Optional[int]:
    m = _WEIGHTS_NAME.match(name)
    return int(m.group(1)) if m else None


def weights_folder_name(version: int) -> str:
    """Policy version `version` as a Hugging Face folder view (weights/publish.py version_folder)."""
    return f"policy_v{version:06d}"


def parse_weights_folder_name(name: str) -> Optional[int]:
    m = _WEIGHTS_FOLDER.match(name)
    return int(m.group(1)) if m else None


def behaviour_name(version: int) -> str:
    """A kept behaviour policy version inside a checkpoint folder."""
    return f"behaviour_v{version:06d}.safetensors"


def parse_behaviour_name(name: str) -> Optional[int]:
    m = _BEHAVIOUR_NAME.match(name)
    return int(m.group(1)) if m else None


def rank_state_name(rank: int, ranks: int) -> str:
    """The file of train rank `rank` (of `ranks`) inside a sharded checkpoint folder (train.sharding=fsdp)."""
    return f"{CKPT_RANK_PREFIX}{rank:03d}_of_{ranks:03d}.safetensors"


def parse_rank_state_name(name: str) -> Optional[tuple[int, int]]:
    """(rank, ranks) of a rank_state_name, or None when `name` is not one."""
    m = _RANK_STATE_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Entry:
    path: str
    """Relative to RUN_DIR; upper-case parts are numbers (S step, J shard, V version, R rank)."""
    writer: str
    """Who writes it."""
    doc: str
    """What it holds."""


ENTRIES: tuple[Entry, ...] = (
    Entry(CONFIG, "launcher", "the resolved config of the run; every rank reads it"),
    Entry(
        OWNER, "launcher / Slurm rank 0", "the lease: who runs on this run dir (host, pid, job), renewed while it lives"
    ),
    Entry(f"{TOKENIZER}/", "launcher", "the tokenizer (the archive decodes with it)"),
    Entry(
        PROMPTS,
        "launcher (else rank 0)",
        "a prompt file's set as the run uses it: token ids, labels, text, sha256; every rank reads it",
    ),
    Entry(f"{ROLLOUTS}/step_S/gen_J.h5", "generation rank", "generated shard J of step S (docs/rollout_format.md)"),
    Entry(f"{ROLLOUTS}/step_S/scored_J.h5", "scoring rank", "the same samples with reference log-probs and reward"),
    Entry(
        f"{ROLLOUTS}/{EVALS}/step_S/eval_J.h5",
        "generation rank",
        "eval shard J of the policy after step S: eval responses and their rewards (eval.every)",
    ),
    Entry(f"{WEIGHTS}/policy_vV.safetensors", "train lead", "policy version V for the generators (the last few)"),
    Entry(
        f"{WEIGHTS}/{HF_CONFIGS[0]}",
        "train lead",
        f"the policy's config (and `{HF_CONFIGS[1]}`), as save_pretrained writes it",
    ),
    Entry(
        f"{WEIGHTS}/policy_vV/",
        "a reader (`version_folder`)",
        f"version V as a Hugging Face folder: hard links to the config and the version's file (`{HF_WEIGHTS}`)",
    ),
    Entry(f"{CHECKPOINTS}/step_S/", "train lead", "checkpoint to continue at step S (docs/checkpointing.md)"),
    Entry(f"{CHECKPOINTS}/step_S/{COMMITTED}", "train lead", "the manifest, written last: sha256 and size per file"),
    Entry(
        f"{CHECKPOINTS}/step_S/{CKPT_RANK_PREFIX}R_of_N.safetensors",
        "each train rank (fsdp)",
        "train.sharding=fsdp: that rank's shards of policy, value and AdamW moments",
    ),
    Entry(f"{CHECKPOINTS}/{LATEST}", "train lead", "name of the newest committed checkpoint (a pointer for people)"),
    Entry(LEDGER, "train lead", "one line per step: the shards, prompts and samples it consumed"),
    Entry(METRICS, "train lead", "one line per step: `ppo/`, `gen/`, `score/`, `time/` metrics; `eval/` lines"),
    Entry(f"{TENSORBOARD}/", "train lead", "TensorBoard event files (logging.tensorboard=true)"),
    Entry(TRACKING, "train lead", "the W&B run id and MLflow run id this run logs to, kept across resumes"),
    Entry(f"{WANDB}/", "train lead", "W&B's files (logging.wandb; offline: `wandb sync` uploads them)"),
    Entry(f"{MLRUNS}/", "train lead", "MLflow's file store (logging.mlflow without a tracking_uri)"),
    Entry(f"{TIMING}/ROLE_R.jsonl", "every rank", "phase timings per step (HPC_RLHF_TIMING=1, tools/bench)"),
    Entry(
        f"{ENGINE}/gen_R/", "generation rank", "generate.engine=vllm: the policy's config.json the engine starts from"
    ),
    Entry(f"{FINAL}/{FINAL_POLICY}/", "train lead", "the trained policy, a Hugging Face folder"),
    Entry(f"{REWARD_MODEL}/", "`train-rm`, demo", f"the reward model and its `{RM_REPORT}`"),
    Entry(RECIPE, "`submit-recipe`", "a recipe's chain: each stage's run dir (`sft/`, `rm/`, `rl/`) and Slurm job"),
    Entry(DEMO_REPORT, "demo", "gold reward before and after, RM accuracy, KL, timings"),
    Entry(DEMO_CURVES, "demo", "gold reward, reward-model score and KL over the steps"),
    Entry(METRICS_PLOT, "`hpc-rlhf plot`", "metrics.jsonl drawn: rewards, KL, losses, entropy, lengths, throughput"),
    Entry(METRICS_PLOT_DATA, "`hpc-rlhf plot`", "the points of metrics.png, per panel and metric"),
    Entry(f"{SLURM}/", "submitit, `submit`", "sbatch scripts, per-task logs JOBID_R_log.{out,err}"),
    Entry(f"{SLURM}/{JOBS}", "`submit`, the job", "event log: submit, resume, requeue, cancel, ..."),
    Entry(f"{CODE}/hpc_rlhf/", "`submit`", "the package as it was at submission (slurm.snapshot_code)"),
    Entry(f"{RANKS}/rank_R.json", "every rank", "this attempt's rank R: pid, host, role; `rank_R.exit` on leaving"),
    Entry(f"{RANKS}/node_K.token", "each node's first rank", "this attempt's token: proves RUN_DIR is shared"),
)


def markdown_table() -> str:
    rows = ["| path | written by | holds |", "|---|---|---|"]
    rows += [f"| `{e.path}` | {e.writer} | {e.doc} |" for e in ENTRIES]
    return "\n".join(rows)


@dataclass(frozen=True)
class RunDir:
    """The paths of the run at `root` (as given: absolute when the caller made it so)."""

    root: str

    def _p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config(self) -> str:
        return self._p(CONFIG)

    @property
    def tokenizer(self) -> str:
        return self._p(TOKENIZER)

    @property
    def has_tokenizer(self) -> bool:
        """A saved tokenizer folder is in place (its tokenizer.json is written)."""
        return os.path.exists(os.path.join(self.tokenizer, TOKENIZER_FILE))

    @property
    def prompts(self) -> str:
        return self._p(PROMPTS)

    @property
    def rollouts(self) -> str:
        return self._p(ROLLOUTS)

    def step_dir(self, step: int) -> str:
        return self._p(ROLLOUTS, step_name(step))

    def shard(self, step: int, shard: int, kind: str) -> str:
        return os.path.join(self.step_dir(step), shard_name(shard, kind))

    def eval_shard(self, step: int, shard: int) -> str:
        """Eval shard `shard` of the policy after step `step` (version step + 1)."""
        return self._p(ROLLOUTS, EVALS, step_name(step), shard_name(shard, "eval"))

    @property
    def weights_dir(self) -> str:
        return self._p(WEIGHTS)

    def weights(self, version: int) -> str:
        return self._p(WEIGHTS, weights_name(version))

    def engine_dir(self, rank: int) -> str:
        return self._p(ENGINE, f"gen_{rank}")

    def weights_folder(self, version: int) -> str:
        return self._p(WEIGHTS, weights_folder_name(version))

    @property
    def checkpoints(self) -> str:
        return self._p(CHECKPOINTS)

    def checkpoint(self, step: int) -> str:
        return self._p(CHECKPOINTS, step_name(step))

    @property
    def latest(self) -> str:
        return self._p(CHECKPOINTS, LATEST)

    @property
    def ledger(self) -> str:
        return self._p(LEDGER)

    @property
    def metrics(self) -> str:
        return self._p(METRICS)

    @property
    def tensorboard(self) -> str:
        return self._p(TENSORBOARD)

    @property
    def tracking(self) -> str:
        return self._p(TRACKING)

    @property
    def wandb(self) -> str:
        """The folder W&B writes in (its `dir` is RUN_DIR: it adds `wandb/` itself)."""
        return self._p(WANDB)

    @property
    def mlruns(self) -> str:
        return self._p(MLRUNS)

    def timing(self, role: str, rank: int) -> str:
        return self._p(TIMING, f"{role}_{rank}.jsonl")

    @property
    def final(self) -> str:
        return self._p(FINAL)

    @property
    def final_policy(self) -> str:
        return self._p(FINAL, FINAL_POLICY)

    @property
    def reward_model(self) -> str:
        return self._p(REWARD_MODEL)

    @property
    def demo_report(self) -> str:
        return self._p(DEMO_REPORT)

    @property
    def demo_curves(self) -> str:
        return self._p(DEMO_CURVES)

    @property
    def slurm(self) -> str:
        return self._p(SLURM)

    @property
    def jobs(self) -> str:
        return self._p(SLURM, JOBS)

    def slurm_log(self, job_id: str, rank: int, stream: str) -> str:
        """stream 'out' or 'err': the file submitit's tasks write (JOBID_RANK_log.out / .err)."""
        return self._p(SLURM, f"{job_id}_{rank}_log.{stream}")

    @property
    def code(self) -> str:
        return self._p(CODE)

    @property
    def owner(self) -> str:
        return self._p(OWNER)

    @property
    def recipe(self) -> str:
        return self._p(RECIPE)

    def recipe_stage(self, stage: str) -> str:
        """The run dir of a recipe's stage (one of RECIPE_STAGES)."""
        return self._p(stage)

    @property
    def ranks(self) -> str:
        return self._p(RANKS)

    def rank_info(self, rank: int) -> str:
        return self._p(RANKS, f"rank_{rank:05d}.json")

    def rank_exit(self, rank: int) -> str:
        return self._p(RANKS, f"rank_{rank:05d}.exit")

    def node_token(self, node: int) -> str:
        return self._p(RANKS, f"node_{node:03d}.token")


def rank_of_info_name(name: str) -> Optional[int]:
    """R of a `.ranks/rank_RRRRR.json` base name, else None."""
    m = re.match(r"^rank_(\d+)\.json$", name)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------- durable writes


def tmp_path(path: str) -> str:
    """The temporary name `path` is written under before its rename (same folder, hidden, marked)."""
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}{TMP_MARK}{os.getpid()}")


def is_temporary(name: str) -> bool:
    """A base name a writer uses before its rename (or a folder being deleted)."""
    return name.startswith(".") and TMP_MARK in name


def fsync_file(path: str) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_file


def sync_paths(paths: list[str]) -> None:
    """fsync every file of `paths`, then every folder holding one. The fsyncs run side by side
    (threads; fsync releases the GIL), so the filesystem can commit them together: on ext4 eight
    files take about the time of one."""
    if not paths:
        return
    dirs = sorted({os.path.dirname(p) or "." for p in paths})
    with ThreadPoolExecutor(min(16, len(paths))) as pool:
        list(pool.map(fsync_file, paths))
        list(pool.map(fsync_dir, dirs))


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically (tmp + fsync + rename + fsync dir)."""
    d = os.path.dirname(path) or "."
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(d)


_reapers: list[threading.Thread] = []


def remove_tree(path: str, background: bool = False) -> None:
    """Delete a folder so that a kill half-way never leaves it half-deleted under its own name:
    rename it to a `.tmp-` name first (cleaned up later if the kill comes before rmtree ends).
    background: the rmtree of the renamed folder runs on a thread (waited for at exit; freeing a
    checkpoint's blocks costs as much as writing a third of it, and nothing waits for it)."""
    if not os.path.exists(path):
        return
    parent, name = os.path.split(path)
    doomed = os.path.join(parent, f"{TMP_MARK}del-{name}-{time.monotonic_ns()}-{os.getpid()}")
    os.rename(path, doomed)
    fsync_dir(parent)
    if not background:
        shutil.rmtree(doomed, ignore_errors=True)
        return
    t = threading.Thread(target=shutil.rmtree, args=(doomed,), kwargs={"ignore_errors": True}, daemon=True)
    t.start()
    _reapers[:] = [r for r in _reapers if r.is_alive()] + [t]


@atexit.register
def wait_for_removals() -> None:
    for t in list(_reapers):
        t.join()


def remove_path(path: str) -> None:
    """Remove a file or a folder; quiet when it is gone already."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def clean_temporaries(root: str) -> list[str]:
    """Remove what writers killed before their rename left behind (`.NAME.tmp-PID` files and `.tmp-*`
    folders) in the run dir, rollouts/, weights/, checkpoints/ and final/. Call it only while no other
    process of the run writes (the train lead at start-up, before it publishes the first weights).
    Returns the removed paths."""
    rd, removed = RunDir(root), []
    for d in (rd.root, rd.weights_dir, rd.checkpoints, rd.final):
        if not os.path.isdir(d):
            continue
        for e in os.scandir(d):
            if e.name.startswith(".") and (TMP_MARK in e.name or e.name.startswith(TMP_MARK)):
                remove_path(e.path)
                removed.append(e.path)
    for d, _dirs, files in os.walk(rd.rollouts):
        for f in files:
            if is_temporary(f):
                remove_path(os.path.join(d, f))
                removed.append(os.path.join(d, f))
    return removed
