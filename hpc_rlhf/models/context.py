"""The models' context lengths against the sequences a run feeds them, checked before any rank starts.

    context_limit("/models/qwen")                     # ("max_position_embeddings", 32768), or None when unknown
    check_context(cfg, 768, "task.max_prompt_tokens=512 + generate.max_new_tokens=256", fix="lower them")

A sequence longer than a model's positions fails (learned position embeddings: an index error) or degrades
(rotary ones: positions it never saw) deep inside a rank; launch/prepare.py calls check_context with the
longest sequence of the run (RL: prompt + response; SFT: the longest example) so that it is a one-line
UserError naming the keys and the model folder instead. The limit is the folder's config.json (its text
config): `max_position_embeddings`, or the family's name for it (`n_positions`, `max_sequence_length`,
`seq_length`, `n_ctx`); a model built from `model.arch` has `model.arch.max_position`. A folder whose family
names none of them is not checked.
"""

from __future__ import annotations

from typing import Optional

from transformers import AutoConfig

from hpc_rlhf.config import Config
from hpc_rlhf.errors import UserError
from hpc_rlhf.plugins import advantage_estimator

LIMIT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_limit(path: str) -> Optional[tuple[str, int]]:
    """(config key, positions) of the model folder `path`, or None when its family names no limit."""
    try:
        conf = AutoConfig.from_pretrained(path, local_files_only=True).get_text_config()
    except Exception:  # noqa: BLE001 -- an unreadable folder is reported where it is loaded (build.check_folders)
        return None
    written = conf.to_dict()  # the names config.json uses (gpt2: n_positions, which transformers also maps)
    for key in (*[k for k in LIMIT_KEYS if k in written], *LIMIT_KEYS):
        value = getattr(conf, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    return None


def reward_model_used(cfg: Config) -> bool:
    """Whether a reward source of the run is the reward model: one of reward.sources, or of eval.sources when
    evaluations run (eval.every > 0; the generation ranks then load it too)."""
    if cfg.stage != "rl":
        return False
    sources = list(cfg.reward.sources) + (list(cfg.eval.sources) if cfg.eval.every > 0 else [])
    return any(s.kind == "model" for s in sources)


def run_models(cfg: Config, reward_shares_tokens: bool) -> list[tuple[str, Optional[str]]]:
    """(config key, folder or None: built from model.arch) of every model that reads the run's sequences: the
    policy (and the reference, and a value model from it), the reward model when a source uses it and it reads
    the policy's tokens (one with its own tokenizer reads re-encoded text of another length), and a value
    model started from it."""
    m = cfg.model
    out = [("model.policy_path", m.policy_path)]
    if cfg.stage != "rl":
        return out
    model_rm = reward_model_used(cfg)
    value_from_rm = advantage_estimator(cfg.algo.name).critic and m.value_init == "reward" and m.reward_path is not None
    if (model_rm or value_from_rm) and reward_shares_tokens:
        out.append(("model.reward_path", m.reward_path))
    return out


def check_context(cfg: Config, tokens: int, what: str, fix: str, reward_shares_tokens: bool = True) -> None:
    """A one-line UserError when `tokens` (made of `what`, config keys and values) exceed the context of a
    model of the run; `fix` names what to lower."""
    seen = set()
    for key, path in run_models(cfg, reward_shares_tokens):
        if path is None:
            limit: Optional[tuple[str, int]] = ("model.arch.max_position", cfg.model.arch.max_position)
            name, more = "the model built from model.arch", "raise model.arch.max_position"
        else:
            limit, name, more = context_limit(path), f"{key} '{path}'", "use a model with a longer context"
        if limit is None or (name, limit) in seen:
            continue
        seen.add((name, limit))
        if tokens > limit[1]:
            raise UserError(f"{what} = {tokens} tokens do not fit {name} ({limit[0]}={limit[1]}); {fix}, or {more}")
