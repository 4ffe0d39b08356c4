"""The config schema: one frozen dataclass per section, every field documented where it is declared.

    Config()                                  # the defaults (the demo's values)
    dataclasses.replace(cfg, seed=3)          # derive a changed config; assigning to a field raises

Assigning to a field of a Config or of any section raises FrozenInstanceError naming the field and the
`dataclasses.replace` call that derives the change instead. Checks across fields live in config/checks.py,
loading and fingerprints in config/__init__.py.

`Config` is here; its sections are in config/sections/ (model.py, rl.py, stages.py, run.py, eval.py), importable from
here too. A key that may change on resume is declared so on its field, `resume_safe(...)` (config/fields.py);
config/resume.py derives the list, the refusal's message and the docs from those marks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from hpc_rlhf.config.fields import resume_safe
from hpc_rlhf.config.sections.eval import EvalConfig, EvalTaskConfig
from hpc_rlhf.config.sections.model import LORA_DEFAULT_TARGETS, ArchConfig, LoRAConfig, ModelConfig
from hpc_rlhf.config.sections.rl import (
    REWARD_FUNCTION_ARGS,
    REWARD_FUNCTION_KEYWORDS,
    AlgoConfig,
    GenerateConfig,
    KLConfig,
    PPOConfig,
    RewardConfig,
    RewardSourceConfig,
    TaskConfig,
    VLLMConfig,
)
from hpc_rlhf.config.sections.run import (
    CheckpointConfig,
    LayoutConfig,
    LoggingConfig,
    MLflowConfig,
    PlacementConfig,
    RuntimeConfig,
    SlurmConfig,
    TrainConfig,
    WandbConfig,
)
from hpc_rlhf.config.sections.stages import RMConfig, SFTConfig

__all__ = [
    "LORA_DEFAULT_TARGETS",
    "REWARD_FUNCTION_ARGS",
    "REWARD_FUNCTION_KEYWORDS",
    "AlgoConfig",
    "ArchConfig",
    "CheckpointConfig",
    "Config",
    "EvalConfig",
    "EvalTaskConfig",
    "GenerateConfig",
    "KLConfig",
    "LayoutConfig",
    "LoggingConfig",
    "LoRAConfig",
    "ModelConfig",
    "PlacementConfig",
    "PPOConfig",
    "RewardConfig",
    "RewardSourceConfig",
    "RMConfig",
    "RuntimeConfig",
    "SFTConfig",
    "SlurmConfig",
    "TaskConfig",
    "TrainConfig",
    "VLLMConfig",
    "WandbConfig",
    "MLflowConfig",
]


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/demo"
    """Everything of a run lives here: config, rollouts, checkpoints, metrics, final model."""
    stage: Literal["rl", "sft", "rm"] = "rl"
    """What the run dir runs: `rl` (PPO/GRPO/..., `hpc-rlhf train`), `sft` (`hpc-rlhf sft`) or `rm`
    (`hpc-rlhf train-rm`); set by those commands. It decides the MPI world size (`world_size`)."""
    seed: int = 0
    """Run seed: every random draw derives from it and the identity of what is drawn."""
    total_steps: int = resume_safe(40)
    """PPO steps (one batch of rollouts each)."""
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation during training: held-out prompts, every N steps, its own reward functions."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """When checkpoints are written and how many are kept."""
    logging: LoggingConfig = resume_safe(default_factory=LoggingConfig)  # noqa: RUF009 - a field() with metadata
    """Progress bar and TensorBoard."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Devices, threads, timeouts, launcher."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How the train ranks hold the models: sharding, activation checkpointing, precision."""
    slurm: SlurmConfig = resume_safe(default_factory=SlurmConfig)  # noqa: RUF009 - a field() with metadata
    """Submission to Slurm (`hpc-rlhf submit`)."""
    placement: PlacementConfig = resume_safe(default_factory=PlacementConfig)  # noqa: RUF009 - a field() with metadata
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
