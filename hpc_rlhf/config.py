"""The run configuration: a typed schema (frozen dataclasses) filled from YAML + overrides.

    cfg = load_config("configs/demo.yaml", ["seed=3", "layout.train=2"])
    cfg = dataclasses.replace(cfg, run_dir=os.path.abspath(cfg.run_dir))  # derive, never assign

Every field is documented where it is declared. `load_config` merges, type-checks and validates once;
an unknown key or a bad value raises `ConfigError` with one line naming the key and the valid choices.
A Config and every section of it are frozen: assigning to a field raises `FrozenInstanceError` naming
the field; a changed config is derived with `dataclasses.replace` (nested: replace the section too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_type_hints

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpc_rlhf.errors import ConfigError, first_line


@dataclass(frozen=True)
class LayoutConfig:
    generate: int = 1
    """Ranks sampling responses with the policy (the generation group)."""
    score: int = 1
    """Ranks running the reward model and the reference (the scoring group)."""
    train: int = 1
    """Ranks running PPO updates, data-parallel (the optimization group)."""

    @property
    def world_size(self) -> int:
        return self.generate + self.score + self.train


@dataclass(frozen=True)
class ArchConfig:
    """A small decoder built with random init when `model.policy_path` is unset."""

    model_type: Literal["llama", "qwen2", "gpt2"] = "llama"
    """Hugging Face architecture family of all four models."""
    hidden_size: int = 64
    """Width of the residual stream."""
    num_layers: int = 2
    """Decoder blocks."""
    num_heads: int = 2
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = 256
    """MLP width (llama/qwen2 SwiGLU; gpt2 uses 4*hidden)."""
    max_position: int = 256
    """Longest prompt+response the model accepts."""
    tie_embeddings: bool = False
    """Tie input and output embeddings."""


@dataclass(frozen=True)
class ModelConfig:
    policy_path: Optional[str] = None
    """Local Hugging Face folder of the initial policy (any causal LM); unset = build from `arch`."""
    reward_path: Optional[str] = None
    """Local folder written by `hpc-rlhf train-rm` (or any sequence classifier with one label)."""
    tokenizer_path: Optional[str] = None
    """Local tokenizer folder; unset = the policy folder's, or the demo's word-level tokenizer."""
    value_init: Literal["reward", "policy"] = "reward"
    """Initialise the value model from the reward model (NeMo-Aligner) or from the policy backbone."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    """Architecture used when building models from scratch."""
    init_seed: int = 1234
    """Seed of the random init of models built from `arch` (independent of the run seed)."""


@dataclass(frozen=True)
class TaskConfig:
    name: Literal["demo", "jsonl"] = "demo"
    """`demo`: the synthetic gold-rule task; `jsonl`: prompts from `prompts_path`."""
    prompts_path: Optional[str] = None
    """JSONL with one {"prompt": "..."} per line (task.name=jsonl)."""
    num_prompts: int = 4096
    """Demo: training prompts to synthesise."""
    num_eval_prompts: int = 128
    """Demo: held-out prompts for the gold-reward evaluation."""
    prompt_len_min: int = 4
    """Demo: shortest prompt, in words."""
    prompt_len_max: int = 8
    """Demo: longest prompt, in words."""
    vocab_words: int = 96
    """Demo: words in the synthetic vocabulary."""


@dataclass(frozen=True)
class GenerateConfig:
    prompts_per_step: int = 32
    """Prompts drawn per PPO step (global, over all generators)."""
    samples_per_prompt: int = 2
    """Responses sampled per prompt."""
    max_new_tokens: int = 16
    """Longest response, in tokens."""
    temperature: float = 1.0
    """Sampling temperature (log-probs everywhere use logits / temperature)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    shards_per_step: int = 1
    """Shards a step's rollouts are cut into; the unit of work of generators and scorers (shard j goes
    to generator j % layout.generate and scorer j % layout.score). More shards let scoring start
    before generation ends; fewer sample in larger batches and write fewer files."""
    stop_at_eos: bool = True
    """End a response at the EOS token; False always generates max_new_tokens."""


@dataclass(frozen=True)
class KLConfig:
    estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator in the reward (k1 = log p - log q; k3 = Schulman's unbiased, >= 0)."""
    init_coef: float = 0.05
    """Initial KL coefficient beta."""
    adaptive: bool = False
    """Adapt beta towards `target` (Ziegler et al. 2019) instead of keeping it fixed."""
    target: float = 6.0
    """Adaptive controller: target KL per sequence (nats)."""
    horizon: int = 10000
    """Adaptive controller: horizon in samples."""


@dataclass(frozen=True)
class PPOConfig:
    epochs: int = 2
    """PPO epochs over each step's batch."""
    minibatch_size: int = 16
    """Samples per optimizer step (global, over all trainers)."""
    lr: float = 3e-4
    """Policy learning rate (AdamW)."""
    value_lr: float = 3e-4
    """Value-model learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay of both models."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Decay of both learning rates over `total_steps` optimizer updates, after warm-up."""
    warmup_steps: int = 0
    """Optimizer updates of linear warm-up."""
    clip_ratio: float = 0.2
    """PPO policy-ratio clip epsilon."""
    value_clip: float = 0.2
    """Value clip around the old values (0 = unclipped)."""
    entropy_coef: float = 0.0
    """Entropy bonus in the policy loss."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip of each model (0 = off)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Whiten advantages over the step's batch (masked)."""
    reward_clip: float = 0.0
    """Clip reward-model scores to [-c, c] (0 = off)."""
    kl: KLConfig = field(default_factory=KLConfig)
    """KL penalty against the reference."""


@dataclass(frozen=True)
class RMConfig:
    pairs_path: Optional[str] = None
    """Preference pairs (JSONL: prompt/chosen/rejected, or HDF5); unset for the demo = synthesise."""
    num_pairs: int = 4096
    """Demo: preference pairs to synthesise."""
    label_noise: float = 0.1
    """Demo: fraction of pairs whose label is flipped."""
    epochs: int = 2
    """Passes over the training pairs."""
    batch_size: int = 64
    """Pairs per optimizer step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    heldout_frac: float = 0.1
    """Fraction of pairs held out for pairwise accuracy."""
    out_dir: Optional[str] = None
    """Where the trained reward model is saved (default RUN_DIR/reward_model)."""


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 10
    """Checkpoint every N PPO steps (0 = off)."""
    every_min: float = 0.0
    """Also checkpoint when this many minutes passed since the last (0 = off)."""
    keep_last: int = 2
    """Committed checkpoints kept (>= 2)."""
    sync_rollouts: Literal["checkpoint", "every_shard"] = "checkpoint"
    """When rollout shards are fsynced. `checkpoint`: the train lead fsyncs every shard of the steps a
    checkpoint covers before committing it (shards are visible to other ranks once renamed, fsynced
    or not); `every_shard`: every writer fsyncs each shard and its rename (slower)."""


@dataclass(frozen=True)
class LoggingConfig:
    progress: bool = True
    """A progress bar on the terminal (rank 0 of the train group)."""
    tensorboard: bool = False
    """Also write TensorBoard event files under RUN_DIR/tb."""
    step_metrics: list[str] = field(default_factory=list)
    """Extra metrics of every step, as `package.module:function` names: each is called by the train
    lead with (the step's responses as token id arrays, the tokenizer, the config) and returns
    {metric name: float} for metrics.jsonl (e.g. the demo's `hpc_rlhf.demo.task:gold_reward_metric`)."""


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: `auto` takes the local GPU when there is one."""
    bf16: bool = False
    """Run models in bfloat16 on GPU (CPU stays fp32)."""
    torch_threads: int = 0
    """Torch intra-op threads per rank (0 = cores / local ranks, at least 1)."""
    wait_timeout_s: float = 600.0
    """Longest a rank waits for a message (shard, weights) before it ends the job naming what it awaited."""
    launcher: Literal["local", "none"] = "local"
    """`local`: `hpc-rlhf train` starts `mpiexec -n WORLD` itself; `none`: run in this process/world."""
    mpiexec: str = "mpiexec"
    """The mpiexec used by the local launcher (a site MPI's, or the PyPI mpich wheel's)."""
    requeue_exit_code: int = 75
    """Exit status meaning "checkpointed on a stop signal, requeue me"."""


@dataclass(frozen=True)
class SlurmConfig:
    nodes: int = 1
    """Nodes of the job."""
    tasks_per_node: int = 0
    """MPI tasks per node (0 = layout world size / nodes)."""
    cpus_per_task: int = 1
    """CPUs per task."""
    gpus_per_node: int = 0
    """GPUs per node."""
    mem_gb: int = 0
    """Memory per node in GB (0 = cluster default)."""
    timeout_min: int = 60
    """Time limit of one job allocation, in minutes."""
    partition: Optional[str] = None
    """Slurm partition."""
    account: Optional[str] = None
    """Slurm account."""
    qos: Optional[str] = None
    """Slurm QOS."""
    constraint: Optional[str] = None
    """Slurm node constraint."""
    mail_user: Optional[str] = None
    """Mail address for job events."""
    mail_type: Optional[str] = None
    """Slurm mail types (e.g. END,FAIL)."""
    signal_delay_s: int = 90
    """Seconds before the time limit that USR2 is sent."""
    max_requeues: int = 3
    """Times the job requeues itself after preemption or time-out."""
    mpi_plugin: str = "pmi2"
    """srun --mpi plugin (pmi2 for the PyPI MPICH)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the job (module load, source venv)."""
    extra_sbatch: list[str] = field(default_factory=list)
    """Extra `#SBATCH` options, e.g. `--exclusive`."""
    snapshot_code: bool = True
    """Run the job on a snapshot of the code taken at submission."""


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/demo"
    """Everything of a run lives here: config, rollouts, checkpoints, metrics, final model."""
    seed: int = 0
    """Run seed: every random draw derives from it and the identity of what is drawn."""
    total_steps: int = 40
    """PPO steps (one batch of rollouts each); safe to change on resume."""
    max_policy_lag: int = 0
    """Step s trains on rollouts of policy version s - k (0 = synchronous on-policy PPO)."""
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    """Ranks per role; their sum is the MPI world size."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Where prompts come from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The four models and the tokenizer."""
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    """Sampling."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO and the KL penalty."""
    rm: RMConfig = field(default_factory=RMConfig)
    """The reward-model stage (`hpc-rlhf train-rm`)."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When checkpoints are written and how many are kept."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Progress bar and TensorBoard."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Devices, threads, timeouts, launcher."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Submission to Slurm (`hpc-rlhf submit`)."""


def _sections(cls: type, path: str = "") -> dict[type, str]:
    """`cls` and every dataclass nested in its fields -> its dotted path ('' for Config, 'ppo.kl', ...)."""
    hints, out = get_type_hints(cls), {cls: path}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_sections(hints[f.name], f"{path}{f.name}."))
    return out


_SECTION_PATH = _sections(Config)


def _refuse_assignment(self: Any, name: str, *_: Any) -> None:
    """Every config section's __setattr__/__delattr__: frozen=True already refuses, this names the fix."""
    path = _SECTION_PATH.get(type(self), "")
    parts, fix = path.split(".")[:-1], f"{name}=..."
    for i in range(len(parts), 0, -1):
        fix = f"{parts[i - 1]}=replace(cfg.{'.'.join(parts[:i])}, {fix})"
    raise dataclasses.FrozenInstanceError(
        f"cannot assign to config field '{path}{name}': the config is frozen after parsing; "
        f"derive a changed one with dataclasses.replace(cfg, {fix})"
    )


for _cls in _SECTION_PATH:
    _cls.__setattr__ = _refuse_assignment  # type: ignore[method-assign,assignment]
    _cls.__delattr__ = _refuse_assignment  # type: ignore[method-assign,assignment]


# Keys that may differ between a checkpoint's config and the config it is resumed with.
RESUME_SAFE_KEYS = (
    "total_steps",
    "logging.",
    "checkpoint.every_steps",
    "checkpoint.every_min",
    "checkpoint.keep_last",
    "checkpoint.sync_rollouts",
    "runtime.wait_timeout_s",
    "runtime.mpiexec",
    "runtime.launcher",
    "slurm.",
)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def _validate_rm(cfg: Config) -> None:
    """The reward-model stage's values (`hpc-rlhf train-rm`, the demo's first stage)."""
    r = cfg.rm
    _check(r.batch_size >= 1, "rm.batch_size", "must be >= 1")
    _check(r.epochs >= 0, "rm.epochs", "must be >= 0")
    _check(0 <= r.heldout_frac < 1, "rm.heldout_frac", "must be in [0, 1) (the rest of the pairs trains)")
    _check(0 <= r.label_noise <= 1, "rm.label_noise", "must be in [0, 1]")
    _check(r.num_pairs >= 2, "rm.num_pairs", "must be >= 2 (one held out, one to train on)")


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express. Returns cfg."""
    for role in ("generate", "score", "train"):
        _check(getattr(cfg.layout, role) >= 1, f"layout.{role}", "needs at least 1 rank")
    g, p = cfg.generate, cfg.ppo
    _check(cfg.total_steps >= 1, "total_steps", "must be >= 1")
    _check(cfg.max_policy_lag >= 0, "max_policy_lag", "must be >= 0")
    _check(g.prompts_per_step >= 1, "generate.prompts_per_step", "must be >= 1")
    _check(g.samples_per_prompt >= 1, "generate.samples_per_prompt", "must be >= 1")
    _check(g.max_new_tokens >= 1, "generate.max_new_tokens", "must be >= 1")
    _check(g.temperature > 0, "generate.temperature", "must be > 0")
    _check(0 < g.top_p <= 1, "generate.top_p", "must be in (0, 1]")
    _check(g.top_k >= 0, "generate.top_k", "must be >= 0 (0 = off)")
    _check(
        1 <= g.shards_per_step <= g.prompts_per_step,
        "generate.shards_per_step",
        f"must be in [1, prompts_per_step={g.prompts_per_step}]",
    )
    busy = max(cfg.layout.generate, cfg.layout.score)
    _check(
        g.shards_per_step >= busy,
        "generate.shards_per_step",
        f"must be >= {busy} (layout.generate={cfg.layout.generate}, layout.score={cfg.layout.score}) so that "
        "no generation or scoring rank idles; a multiple of both spreads the work evenly",
    )
    batch = g.prompts_per_step * g.samples_per_prompt
    _check(
        p.minibatch_size >= 1 and batch % p.minibatch_size == 0,
        "ppo.minibatch_size",
        f"must divide the step batch prompts_per_step*samples_per_prompt={batch}",
    )
    _check(
        p.minibatch_size % cfg.layout.train == 0,
        "ppo.minibatch_size",
        f"must divide by layout.train={cfg.layout.train} (each trainer takes an equal share)",
    )
    _check(p.epochs >= 1, "ppo.epochs", "must be >= 1")
    _check(0 < p.gamma <= 1, "ppo.gamma", "must be in (0, 1]")
    _check(0 <= p.lam <= 1, "ppo.lam", "must be in [0, 1]")
    _check(p.clip_ratio > 0, "ppo.clip_ratio", "must be > 0")
    _check(cfg.checkpoint.keep_last >= 2, "checkpoint.keep_last", "must be >= 2")
    _validate_rm(cfg)
    a = cfg.model.arch
    _check(a.hidden_size % a.num_heads == 0, "model.arch.num_heads", "must divide model.arch.hidden_size")
    if cfg.task.name == "jsonl":
        _check(cfg.task.prompts_path is not None, "task.prompts_path", "must be set when task.name=jsonl")
    _check(
        cfg.task.prompt_len_min >= 1 and cfg.task.prompt_len_max >= cfg.task.prompt_len_min,
        "task.prompt_len_max",
        "must be >= task.prompt_len_min >= 1",
    )
    for key in ("model.policy_path", "model.reward_path", "model.tokenizer_path", "task.prompts_path", "rm.pairs_path"):
        path = _get(cfg, key)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"config key '{key}': path '{path}' does not exist; give a local folder or file")
    _validate_slurm(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------- Slurm checks
# Every `slurm:` value, checked at load time for every run (a local run can be submitted later); the
# submitting side (hpc_rlhf.launch.slurm_submit) relies on them and does not repeat them.


def _validate_slurm(cfg: Config) -> None:
    """The Slurm shape against the layout (one MPI rank per Slurm task) and the `slurm:` values."""
    s, world, lay = cfg.slurm, cfg.layout.world_size, cfg.layout
    _check(s.nodes >= 1, "slurm.nodes", f"must be >= 1 (got {s.nodes})")
    _check(
        s.tasks_per_node >= 0,
        "slurm.tasks_per_node",
        f"must be >= 0 (0 = world / nodes), got {s.tasks_per_node}",
    )
    tpn = s.tasks_per_node
    if tpn == 0:
        _check(
            world % s.nodes == 0,
            "slurm.nodes",
            f"layout world size {world} does not divide over slurm.nodes={s.nodes}; "
            "set slurm.tasks_per_node or change the layout",
        )
        tpn = world // s.nodes
    _check(
        s.nodes * tpn == world,
        "slurm.tasks_per_node",
        f"Slurm tasks slurm.nodes*slurm.tasks_per_node = {s.nodes}*{tpn} = {s.nodes * tpn} != layout world size "
        f"{world} (layout.generate+score+train = {lay.generate}+{lay.score}+{lay.train}); one MPI rank per Slurm task",
    )
    for key, value, low in (
        ("cpus_per_task", s.cpus_per_task, 1),
        ("timeout_min", s.timeout_min, 1),
        ("gpus_per_node", s.gpus_per_node, 0),
        ("mem_gb", s.mem_gb, 0),
        ("max_requeues", s.max_requeues, 0),
        ("signal_delay_s", s.signal_delay_s, 0),
    ):
        _check(value >= low, f"slurm.{key}", f"must be >= {low} (got {value})")
    _check(
        s.signal_delay_s < s.timeout_min * 60,
        "slurm.signal_delay_s",
        f"{s.signal_delay_s} s must be shorter than slurm.timeout_min={s.timeout_min} min",
    )
    _check(
        bool(s.mpi_plugin) and not any(c.isspace() for c in s.mpi_plugin),
        "slurm.mpi_plugin",
        f"'{s.mpi_plugin}' is not an srun --mpi plugin (e.g. pmi2)",
    )
    for opt in s.extra_sbatch:
        _check(
            _is_long_sbatch_option(opt),
            "slurm.extra_sbatch",
            f"'{opt}' is not a long sbatch option such as --exclusive or --reservation=NAME",
        )


def _is_long_sbatch_option(opt: str) -> bool:
    """`--key` or `--key=value`, optionally after `#SBATCH` (what slurm_submit passes on to sbatch)."""
    s = opt.strip()
    if s.startswith("#SBATCH"):
        s = s[len("#SBATCH") :].strip()
    return s.startswith("--") and len(s) >= 3 and " " not in s.split("=", 1)[0]


# ------------------------------------------------------------------------------------------- end Slurm checks


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _valid_keys(node: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _explain(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = first_line(e)
    if "not in" in msg or "Key '" in msg and "not" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = Config()
        try:
            node = _get(node, parent) if parent else node
        except AttributeError:
            pass
        return f"config key '{key}' is unknown; valid keys{' of ' + parent if parent else ''}: {', '.join(_valid_keys(node))}"
    return f"config key '{key}': {msg}"


def load_config(path: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Schema defaults <- YAML file <- `key=value` overrides; typed, validated, returned as a Config."""
    try:
        base = OmegaConf.structured(Config)
        layers = [base]
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"config file '{path}' does not exist; pass a YAML file (see configs/)")
            try:
                layers.append(OmegaConf.load(path))
            except Exception as e:  # yaml syntax
                raise ConfigError(f"config file '{path}' is not valid YAML: {first_line(e)}") from None
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value (e.g. seed=3)")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_explain(e)) from None
    return validate(cfg)  # type: ignore[arg-type]


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(d: dict) -> Config:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d)))  # type: ignore[return-value]


def fingerprint(cfg: Config) -> str:
    """A short hash of the config minus the resume-safe keys: shards and checkpoints carry it."""
    flat = flatten(to_dict(cfg))
    kept = {k: v for k, v in flat.items() if not _is_safe(k) and k != "run_dir"}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE_KEYS)


def resume_diff(saved: Config, new: Config) -> list[str]:
    """Keys whose values differ and are not safe to change on resume, as 'key: old -> new'."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not _is_safe(k) and k != "run_dir"
    ]


def check_resumable(saved: Config, new: Config, where: str) -> None:
    """Raise ConfigError (one line) when `new` differs from the config `saved` with checkpoint `where`
    in keys that are not safe to change on resume. The one resume check of the package: the launcher
    runs it before any rank starts, the train lead again on the checkpoint it loads."""
    diff = resume_diff(saved, new)
    if diff:
        raise ConfigError(
            f"config differs from checkpoint '{where}' in keys not safe to change on resume: "
            + "; ".join(diff)
            + " (only total_steps, logging.*, checkpoint.* intervals, runtime timeouts and slurm.* may change;"
            " start a new run_dir, or undo the change)"
        )
