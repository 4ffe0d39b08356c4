"""Config sections of how a run runs: `layout:`, `placement:`, `train:`, `runtime:`, `checkpoint:`, `logging:`,
`slurm:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from hpc_rlhf.config.fields import resume_safe


@dataclass(frozen=True)
class LayoutConfig:
    generate: int = 1
    """Ranks sampling responses with the policy (the generation group)."""
    score: int = 1
    """Ranks running the reward model and the reference (the scoring group)."""
    train: int = resume_safe(1)
    """Ranks running PPO updates, data-parallel (the optimization group)."""

    @property
    def world_size(self) -> int:
        return self.generate + self.score + self.train


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = resume_safe(10)
    """Checkpoint every N PPO steps (0 = off)."""
    every_min: float = resume_safe(0.0)
    """Also checkpoint when this many minutes passed since the last (0 = off)."""
    keep_last: int = resume_safe(2)
    """Committed checkpoints kept (>= 2)."""
    sync_rollouts: Literal["checkpoint", "every_shard"] = resume_safe("checkpoint")
    """When rollout shards are fsynced. `checkpoint`: the train lead fsyncs every shard of the steps a
    checkpoint covers before committing it (shards are visible to other ranks once renamed, fsynced
    or not); `every_shard`: every writer fsyncs each shard and its rename (slower)."""


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases, from the train lead (pip install 'hpc-rlhf[wandb]'; docs/logging.md)."""

    enabled: bool = False
    """Log every step's metrics, the resolved config and the run's identity to a W&B run; a resumed or
    requeued run continues the same W&B run (its id is kept in RUN_DIR/tracking.json)."""
    mode: Literal["offline", "online"] = "offline"
    """`offline`: files under RUN_DIR/wandb only, no network (`wandb sync` uploads them later); `online`: the
    W&B server (network from the train lead; the credentials of `wandb login`)."""
    project: str = "hpc-rlhf"
    """The W&B project."""
    entity: Optional[str] = None
    """The W&B team or user (None: the account's default)."""
    name: Optional[str] = None
    """The W&B run's display name (None: the run directory's name)."""
    tags: list[str] = field(default_factory=list)
    """Tags of the W&B run."""


@dataclass(frozen=True)
class MLflowConfig:
    """MLflow tracking, from the train lead (pip install 'hpc-rlhf[mlflow]'; docs/logging.md)."""

    enabled: bool = False
    """Log every step's metrics, the resolved config and the run's identity to an MLflow run; a resumed or
    requeued run continues the same MLflow run (its id is kept in RUN_DIR/tracking.json)."""
    tracking_uri: Optional[str] = None
    """None: a file store in RUN_DIR/mlruns (no server, no network; `mlflow ui --backend-store-uri
    RUN_DIR/mlruns` shows it); else any MLflow tracking URI (http://host:5000, sqlite:///path, databricks)."""
    experiment: str = "hpc-rlhf"
    """The MLflow experiment (created when missing)."""
    run_name: Optional[str] = None
    """The MLflow run's name (None: the run directory's name)."""


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
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases (off by default)."""
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    """MLflow (off by default)."""


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: `auto` takes the local GPU when there is one."""
    bf16: bool = False
    """Cast whole models to bfloat16 on a GPU (CPU stays fp32): pure bf16, the trainer's weights and
    AdamW state included (no fp32 master). For mixed precision use train.precision=bf16, which
    takes precedence for the trainer (it keeps fp32 masters then)."""
    torch_threads: int = 0
    """Torch intra-op threads per rank (0 = cores / local ranks, at least 1)."""
    wait_timeout_s: float = resume_safe(600.0)
    """Longest a rank waits for a message (shard, weights) before it ends the job naming what it awaited."""
    launcher: Literal["local", "none"] = resume_safe("local")
    """`local`: `hpc-rlhf train` starts `mpiexec -n WORLD` itself; `none`: run in this process/world."""
    mpiexec: str = resume_safe("mpiexec")
    """The mpiexec used by the local launcher (a site MPI's, or the PyPI mpich wheel's)."""
    requeue_exit_code: int = 75
    """Exit status meaning "checkpointed on a stop signal, requeue me"."""
    start_timeout_s: float = resume_safe(120.0)
    """Longest a task may take from importing MPI to its first heartbeat (MPI_Init, the node map, the
    RUN_DIR check): a task that dies in MPI start-up would otherwise leave its peers blocked there until the
    job's time limit (0 = no deadline; cluster/start_watchdog.py)."""
    heartbeat_timeout_s: float = resume_safe(30.0)
    """A rank that sends no heartbeat for this long (killed, stopped, its node lost) ends the job with its
    rank, role, pid and host named, on any node and under any launcher (0 = off; cluster/heartbeat.py)."""
    lease_ttl_s: float = resume_safe(60.0)
    """The run directory's lease (RUN_DIR/owner.json) expires this long after its owner's last renewal:
    the longest a crashed owner on another node blocks a resume (launch/lease.py)."""
    rendezvous_addr: str = resume_safe("")
    """Address the train group's torch.distributed (gloo/NCCL) rendezvous listens on ("" = the address of
    the first trainer's host name, as the other nodes resolve it; set it to pick a network interface)."""
    rendezvous_port: int = resume_safe(0)
    """TCP port of that rendezvous (0 = a free port the first trainer picks; set it where a firewall
    opens only some ports)."""
    allow_shared_gpu: bool = resume_safe(False)
    """Let two ranks of a node use the same GPU (the same device UUID, compared at start-up across the node's
    ranks, however the site binds GPUs to tasks); refused otherwise, since two ranks on one GPU share its
    memory and time without saying so."""


@dataclass(frozen=True)
class TrainConfig:
    sharding: Literal["none", "fsdp"] = resume_safe("none")
    """How the train ranks hold the policy, the value model and their AdamW states: `none` = full
    copies on every rank (gradients all-reduced); `fsdp` = FSDP2 shards over the train ranks
    (fully_shard per decoder layer; gradients reduce-scattered; a no-op with one train rank).
    Checkpoints are the same either way, so it may change on resume (parallel/fsdp.py)."""
    activation_checkpointing: bool = resume_safe(False)
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (less memory, one more forward per update; the same numbers). May change on resume."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """`fp32`: everything in float32. `bf16`: mixed precision: the train ranks keep fp32 weights and
    AdamW state (the masters) and run forward/backward under bf16 autocast (fp32 gradients, fp32
    all-reduce; with sharding=fsdp FSDP2's MixedPrecisionPolicy(bf16 params, fp32 reduce) instead);
    the generators and scorers hold their models in bf16 and cast published fp32 weights on load.
    Unlike runtime.bf16 (whole models cast to bf16 on a GPU only, the trainer's too: no fp32
    master) it applies on the CPU as well. Changes the numbers, so not resume-safe."""
    max_tokens_per_microbatch: int = resume_safe(0)
    """Token budget of one forward/backward: each rank's share of a minibatch is cut into micro-batches of
    rows of similar length, each padded to its own longest row, with at most this many (rows x columns)
    tokens (a longer row goes alone); gradients accumulate, so the update is the same up to float order.
    0 = one pass over the share, padded to the minibatch's longest row. May change on resume."""


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
    mpi_plugin: str = "auto"
    """srun --mpi plugin; auto: the first of `srun --mpi=list` that mpi4py's MPI speaks (pmi2 for MPICH,
    pmix for Open MPI), chosen at submit (launch/site_mpi.py)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the job (module load, source venv)."""
    extra_sbatch: list[str] = field(default_factory=list)
    """Extra `#SBATCH` options, e.g. `--exclusive`."""
    snapshot_code: bool = True
    """Run the job on a snapshot of the code taken at submission."""


@dataclass(frozen=True)
class PlacementConfig:
    """Which nodes of the job each role group runs on: `any`, or node indices such as `0` or `1,2`
    (node i = the i-th node of the allocation, which holds ranks i*tasks_per_node and on). Checked against
    the allocation by `hpc-rlhf submit` (--dry-run too) and again at start-up (cluster/topology.py)."""

    generate: str = "any"
    """Nodes of the generation group (`any` or comma-separated node indices)."""
    score: str = "any"
    """Nodes of the scoring group (`any` or comma-separated node indices)."""
    train: str = "any"
    """Nodes of the training group (`any` or comma-separated node indices)."""

    def nodes(self, role: str) -> Optional[tuple[int, ...]]:
        """The node indices of `role` (None = any node); ValueError on a malformed value."""
        value = str(getattr(self, role)).strip()
        if value == "any":
            return None
        out = tuple(int(x) for x in value.split(","))  # ValueError: not integers
        if not out or min(out) < 0 or len(set(out)) != len(out):
            raise ValueError(value)
        return tuple(sorted(out))
