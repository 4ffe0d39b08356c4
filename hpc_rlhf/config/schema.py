"""The config schema: one frozen dataclass per section, every field documented where it is declared.

    Config()                                  # the defaults (the demo's values)
    dataclasses.replace(cfg, seed=3)          # derive a changed config; assigning to a field raises

Assigning to a field of a Config or of any section raises FrozenInstanceError naming the field and the
`dataclasses.replace` call that derives the change instead. Checks across fields live in config/checks.py,
loading and fingerprints in config/__init__.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_type_hints


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

    model_type: Literal["llama", "qwen2", "mistral", "gpt_neox", "phi3", "gemma", "gpt2"] = "llama"
    """Hugging Face architecture family of all four models (a model folder may be of any family)."""
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


LORA_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the policy (peft; docs/lora.md): only the adapters train, the reference is
    the base with the adapters disabled, publishing and checkpoints carry the adapters only. No dropout
    (as in all four models: a dropout mask would be a random draw outside the seeded plan)."""

    r: int = 0
    """Adapter rank (0 = off: the whole policy trains)."""
    alpha: float = 16.0
    """Scale numerator: the adapter update is (alpha / r) * B @ A."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_DEFAULT_TARGETS))
    """Names of the Linear modules that get adapters (llama family: attention q/k/v/o and the MLP
    projections; gpt2: c_attn, c_proj, c_fc); names the model lacks fail when the policy is built."""
    export: Literal["merged", "adapter"] = "merged"
    """RUN_DIR/final/policy as `merged`: a plain Hugging Face folder (base + adapters folded in), or
    `adapter`: a peft adapter folder (adapter_config.json names the base folder)."""
    init_seed: int = 4321
    """Seed of the adapters' random init (A; B starts at zero, so version 0 is the base exactly)."""


@dataclass(frozen=True)
class ModelConfig:
    policy_path: Optional[str] = None
    """Local Hugging Face folder of the initial policy (any causal LM); unset = build from `arch`."""
    reward_path: Optional[str] = None
    """Local folder written by `hpc-rlhf train-rm` (or any sequence classifier with one label)."""
    tokenizer_path: Optional[str] = None
    """Local tokenizer folder; unset = the policy folder's, or the demo's word-level tokenizer."""
    reward_tokenizer_path: Optional[str] = None
    """The reward model's tokenizer folder; unset = the reward model folder's own tokenizer files when it has
    some, else the policy's. When it differs from the policy's, the scorer decodes prompt and response to text
    and re-encodes them with it (models/retokenize.py); when the same, the policy's tokens are scored as they are."""
    reward_chat_template: bool = False
    """Re-encode for the reward model with its tokenizer's chat template (the prompt as the user turn, the
    response as the assistant turn); applies only when the reward model's tokenizer differs from the policy's."""
    value_init: Literal["reward", "policy"] = "reward"
    """Initialise the value model from the reward model (NeMo-Aligner) or from the policy backbone."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    """Architecture used when building models from scratch."""
    init_seed: int = 1234
    """Seed of the random init of models built from `arch` (independent of the run seed)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """Train low-rank adapters instead of the whole policy (lora.r > 0)."""


@dataclass(frozen=True)
class TaskConfig:
    name: Literal["demo", "jsonl", "dataset"] = "demo"
    """`demo`: the synthetic gold-rule task; `jsonl`: {"prompt", "label"} lines of `prompts_path`, tokenized
    as they are (no special tokens); `dataset`: the rows of `prompts_path` in any format (JSONL, Parquet, CSV,
    a saved dataset folder) with the columns, chat template and length limit below (docs/your_model.md)."""
    prompts_path: Optional[str] = None
    """The prompt file or folder (task.name=jsonl or dataset); a local path, read before any job is queued."""
    prompt_column: str = "prompt"
    """task.name=dataset: the column holding each prompt: a string, or a list of chat messages
    {"role", "content"} (messages need chat_template=true)."""
    label_column: Optional[str] = None
    """task.name=dataset: the column holding each prompt's label (what reward functions check answers
    against: a string or a number, kept as its text, on every row); unset = no labels."""
    chat_template: bool = False
    """task.name=dataset: render each prompt with the tokenizer's chat template and its generation prompt
    (a string prompt is one user turn); false = the text tokenized with the tokenizer's special tokens (BOS)."""
    max_prompt_tokens: int = 0
    """task.name=dataset: the longest prompt in tokens (after the chat template); longer ones follow
    `long_prompts`; 0 = no limit."""
    long_prompts: Literal["drop", "truncate_left"] = "drop"
    """task.name=dataset: a prompt over max_prompt_tokens is left out of the prompt set (`drop`) or keeps its
    last max_prompt_tokens tokens (`truncate_left`); counted in metrics.jsonl as data/prompts_dropped and
    data/prompts_truncated."""
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
class AlgoConfig:
    """The RL algorithm of the train step; every choice is written up in docs/algorithms.md."""

    name: str = "ppo"
    """The advantage estimator, by its registered name (hpc_rlhf/algo/registry.py): `ppo`: GAE on a learned value
    model; `grpo`, `rloo`, `reinforce_pp`: critic-free (no value model is built, trained, checkpointed or
    published); or `package.module:function`, one of one's own registered with @register_advantage."""
    group_std: bool = True
    """grpo: divide each advantage by the std of its prompt's group (false = Dr. GRPO: centre only)."""
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "token_sum_norm"] = "token_mean"
    """How per-token losses make the minibatch loss: mean over all its tokens; mean over sequences of each
    sequence's token mean; token sum / (loss_agg_norm * sequences) (Dr. GRPO)."""
    loss_agg_norm: int = 0
    """token_sum_norm's constant per sequence (0 = generate.max_new_tokens)."""
    kl_reward: bool = True
    """Subtract beta * KL (ppo.kl.*) from the reward, per token (false = no KL in the reward)."""
    kl_loss: Literal["off", "k1", "k2", "k3"] = "off"
    """KL(policy || reference) as a loss term on the policy being trained, with this estimator."""
    kl_loss_coef: float = 0.04
    """Weight of the KL loss term (algo.kl_loss != off)."""
    drop_uniform_groups: bool = False
    """grpo/rloo: leave out of the loss the groups whose scores are all equal (zero advantage)."""
    clip_low: float = 0.0
    """The policy ratio's lower clip eps_low (`1 - eps_low`); 0 = ppo.clip_ratio."""
    clip_high: float = 0.0
    """The policy ratio's upper clip eps_high (`1 + eps_high`; DAPO's clip-higher, e.g. 0.28); 0 = the lower one."""
    dual_clip: float = 0.0
    """Dual clip c > 1: a token with a negative advantage loses at most `-A * c` (Ye et al. 2020); 0 = off."""
    overlong_filter: bool = False
    """Leave out of the loss every response cut by generate.max_new_tokens (no EOS) (DAPO's overlong filtering)."""

    @property
    def uses_critic(self) -> bool:
        """Whether the algorithm trains a value model (ppo only)."""
        return self.name == "ppo"


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
    chat_template: bool = False
    """Render each pair's prompt (a `prompt` string or a `messages` list) with the tokenizer's chat template and
    its generation prompt; false: the prompt text as it is (messages then need the template)."""
    prompt_column: str = "prompt"
    """Table pairs: the column of each pair's prompt, a string or a list of chat messages (messages need
    rm.chat_template=true). A table without it but with a `messages` column uses that one."""
    chosen_column: str = "chosen"
    """Table pairs: the column of the preferred answer (text)."""
    rejected_column: str = "rejected"
    """Table pairs: the column of the other answer (text)."""
    ranks: int = 1
    """MPI ranks of `hpc-rlhf train-rm` (stage=rm), data-parallel: each takes an equal share of every batch."""


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning, `hpc-rlhf sft` (stage=sft): the first stage of the recipe (docs/your_model.md)."""

    data_path: Optional[str] = None
    """Examples: a JSONL/JSON/Parquet/CSV/TSV file or a saved dataset folder (hpc_rlhf/data/tables.py)."""
    prompt_column: str = "prompt"
    """Column of the prompt text (prompt/response data)."""
    response_column: str = "response"
    """Column of the response text the model learns to write (the loss is on its tokens and the EOS only)."""
    messages_column: Optional[str] = None
    """When set: the column of chat conversations (lists of {role, content}) used instead of prompt/response; the
    loss is on the assistant turns' tokens. Needs sft.chat_template=true."""
    chat_template: bool = False
    """Render the prompt with the tokenizer's chat template and its generation prompt, the response appended
    + EOS; false: prompt text (with the tokenizer's BOS if it adds one) + response text + EOS."""
    max_len: int = 512
    """Longest example in tokens: longer ones are cut at the end (of the response); one left with no response
    token is dropped and counted (sft/dropped in the report). With packing: the length of a packed row."""
    packing: bool = False
    """Pack examples (in their shuffled order) into rows of max_len tokens; attention never crosses from one
    example to another (a block-diagonal causal mask, positions restart per example)."""
    epochs: int = 1
    """Passes over the examples."""
    batch_size: int = 8
    """Examples (packing: packed rows) per optimizer step, over all ranks."""
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0 = off)."""
    ranks: int = 1
    """MPI ranks, data-parallel: each takes an equal share of every batch; the loss is normalised by the batch's
    global token count, so any number of ranks computes the single-rank update (up to float order)."""


REWARD_FUNCTION_ARGS = ("prompts", "responses", "prompt_ids", "response_ids", "labels")  # hpc_rlhf/rewards
REWARD_FUNCTION_KEYWORDS = ("cfg",)  # passed only to a reward function that declares it


@dataclass(frozen=True)
class RewardSourceConfig:
    """One term of the reward (an item of `reward.sources`)."""

    name: str = "rm"
    """The source's name: its column in the shards' `reward_sources` and the archive's `reward/NAME`."""
    kind: str = "model"
    """`model`: the reward model (model.reward_path) scores prompt+response; `function`: `function` does
    (a str checked in config/checks.py, so that an error names reward.sources[i].kind)."""
    function: Optional[str] = None
    """kind=function: `package.module:function`, called on the scoring ranks (contract: hpc_rlhf/rewards)."""
    weight: float = 1.0
    """Weight of the source: reward = the sum over the sources of weight * value."""


@dataclass(frozen=True)
class RewardConfig:
    sources: list[RewardSourceConfig] = field(default_factory=lambda: [RewardSourceConfig()])
    """The reward's terms, summed with their weights; each one's value is kept per sample in the shards.
    Default: the reward model alone, weight 1 (the reward is exactly its score)."""


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
    """Cast whole models to bfloat16 on a GPU (CPU stays fp32): pure bf16, the trainer's weights and
    AdamW state included (no fp32 master). For mixed precision use train.precision=bf16, which
    takes precedence for the trainer (it keeps fp32 masters then)."""
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
    start_timeout_s: float = 120.0
    """Longest a task may take from importing MPI to its first heartbeat (MPI_Init, the node map, the
    RUN_DIR check): a task that dies in MPI start-up would otherwise leave its peers blocked there until the
    job's time limit (0 = no deadline; cluster/start_watchdog.py)."""
    heartbeat_timeout_s: float = 30.0
    """A rank that sends no heartbeat for this long (killed, stopped, its node lost) ends the job with its
    rank, role, pid and host named, on any node and under any launcher (0 = off; cluster/heartbeat.py)."""
    lease_ttl_s: float = 60.0
    """The run directory's lease (RUN_DIR/owner.json) expires this long after its owner's last renewal:
    the longest a crashed owner on another node blocks a resume (launch/lease.py)."""
    rendezvous_addr: str = ""
    """Address the train group's torch.distributed (gloo/NCCL) rendezvous listens on ("" = the address of
    the first trainer's host name, as the other nodes resolve it; set it to pick a network interface)."""
    rendezvous_port: int = 0
    """TCP port of that rendezvous (0 = a free port the first trainer picks; set it where a firewall
    opens only some ports)."""
    allow_shared_gpu: bool = False
    """Let several ranks of a node use one GPU (more ranks on a node than its visible GPUs); refused
    otherwise, since two ranks on one GPU share its memory and time without saying so."""


@dataclass(frozen=True)
class TrainConfig:
    sharding: Literal["none", "fsdp"] = "none"
    """How the train ranks hold the policy, the value model and their AdamW states: `none` = full
    copies on every rank (gradients all-reduced); `fsdp` = FSDP2 shards over the train ranks
    (fully_shard per decoder layer; gradients reduce-scattered; a no-op with one train rank).
    Checkpoints are the same either way, so it may change on resume (parallel/fsdp.py)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (less memory, one more forward per update; the same numbers). May change on resume."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """`fp32`: everything in float32. `bf16`: mixed precision: the train ranks keep fp32 weights and
    AdamW state (the masters) and run forward/backward under bf16 autocast (fp32 gradients, fp32
    all-reduce; with sharding=fsdp FSDP2's MixedPrecisionPolicy(bf16 params, fp32 reduce) instead);
    the generators and scorers hold their models in bf16 and cast published fp32 weights on load.
    Unlike runtime.bf16 (whole models cast to bf16 on a GPU only, the trainer's too: no fp32
    master) it applies on the CPU as well. Changes the numbers, so not resume-safe."""
    max_tokens_per_microbatch: int = 0
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
    mpi_plugin: str = "pmi2"
    """srun --mpi plugin (pmi2 for the PyPI MPICH)."""
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


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/demo"
    """Everything of a run lives here: config, rollouts, checkpoints, metrics, final model."""
    stage: Literal["rl", "sft", "rm"] = "rl"
    """What the run dir runs: `rl` (PPO/GRPO/..., `hpc-rlhf train`), `sft` (`hpc-rlhf sft`) or `rm`
    (`hpc-rlhf train-rm`); set by those commands. It decides the MPI world size (`world_size`)."""
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
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """The algorithm: ppo or a critic-free one, loss aggregation, where the KL goes."""
    rm: RMConfig = field(default_factory=RMConfig)
    """The reward-model stage (`hpc-rlhf train-rm`)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The supervised fine-tuning stage (`hpc-rlhf sft`)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Where the reward comes from: the reward model and/or functions (`reward.sources`)."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When checkpoints are written and how many are kept."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Progress bar and TensorBoard."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Devices, threads, timeouts, launcher."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How the train ranks hold the models: sharding, activation checkpointing, precision."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Submission to Slurm (`hpc-rlhf submit`)."""
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    """Which nodes each role group runs on (a multi-node job); results do not depend on it."""

    @property
    def world_size(self) -> int:
        """MPI ranks of the run: the layout's sum for stage=rl, sft.ranks or rm.ranks for those stages."""
        return {"sft": self.sft.ranks, "rm": self.rm.ranks}.get(self.stage, self.layout.world_size)


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
