"""Config section `eval:`: evaluation during training (docs/logging.md, "Evaluation during training")."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpc_rlhf.config.sections.rl import RewardSourceConfig, TaskConfig


@dataclass(frozen=True)
class EvalTaskConfig(TaskConfig):
    """`eval.task`: the keys of `task:` (a type of its own, so that an error names `eval.task.*`)."""


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0
    """Evaluate policy version V (the policy after step V-1) whenever V % every == 0, the final version
    included; its `eval/*` metrics are logged at step V-1. 0 = no evaluation."""
    task: EvalTaskConfig = field(default_factory=EvalTaskConfig)
    """The eval prompts: the same keys as `task:` (a JSONL or table file, or the demo's prompts)."""
    num_prompts: int = 0
    """Evaluate on the first N prompts of the eval set (0 = all of them)."""
    samples_per_prompt: int = 1
    """Responses per eval prompt; pass@k is logged for k = 1, 2, 4, ... up to this number."""
    temperature: float = 0.0
    """Sampling temperature of the eval responses; 0 = greedy (the most likely token, no seed needed)."""
    max_new_tokens: int = 16
    """Longest eval response in tokens."""
    shards: int = 1
    """Eval shards per evaluation; shard J (a contiguous part of the eval prompts) is sampled by
    generation rank J % layout.generate, so the eval's results never depend on the layout."""
    sources: list[RewardSourceConfig] = field(default_factory=list)
    """The eval's reward sources (items as in `reward.sources`: functions, and at most one kind=model, the
    run's reward model, which the generation ranks then load too), computed on the generation ranks;
    `eval/reward/NAME` is each one's mean, `eval/reward_mean` their weighted sum's."""
    pass_source: str = ""
    """The source of `sources` that says whether a response is correct (a value > 0 passes, e.g.
    exact_match's 1.0): `eval/pass_at_K` is logged for it. Empty: no pass@k."""
