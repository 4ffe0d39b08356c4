"""Get a run directory ready before any rank starts (running it is another step: launch/run.py, launch/local.py,
or a Slurm job: launch/slurm_submit.py).

    cfg, run_dir = prepare_run(load_config("configs/demo.yaml", overrides))
    code = run_local(cfg, run_dir)  # hpc_rlhf.launch.run: mpiexec (runtime.launcher=local) or this process

`prepare_run` is what every way of starting a run does before any rank starts (`hpc-rlhf train`,
`resume`, `demo`, and the Slurm submission): refuse a config that differs from the run's latest
checkpoint in keys not safe to change on resume, save the tokenizer to RUN_DIR/tokenizer (the
archive decodes with it), read the data of an SFT or reward-model stage, or an RL run's prompt file and
reward-model tokenizer (bad data fails here, before any job is queued), check that the longest sequence fits
every model's context (models/context.py), write the rendered prompt set to RUN_DIR/prompts.h5 (the ranks read
it instead of the prompt file: rollout/prompt_file.py) and RUN_DIR/config.yaml,
which every rank reads. The config is frozen:
it returns a copy whose run_dir is absolute, and that copy is the one to launch.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from hpc_rlhf.checkpoint.store import find_latest
from hpc_rlhf.config import Config, to_yaml
from hpc_rlhf.errors import UserError
from hpc_rlhf.plugins import advantage_estimator
from hpc_rlhf.rundir import RunDir
from hpc_rlhf.stages.tokenizer import save_run_tokenizer


def prepare_run(cfg: Config) -> tuple[Config, str]:
    """Create/check RUN_DIR before any rank starts. Returns (cfg with an absolute run_dir, that run_dir)."""
    run_dir = os.path.abspath(cfg.run_dir)
    cfg = dataclasses.replace(cfg, run_dir=run_dir)
    os.makedirs(run_dir, exist_ok=True)
    info = find_latest(run_dir)
    if info is not None:
        from hpc_rlhf.checkpoint.train_state import check_start  # imports torch: only on a resume

        check_start(info.path, cfg)  # the config may resume it; its optimizer state is plain data
    start = info.path if info is not None else None
    prompt_file = cfg.stage == "rl" and cfg.task.name != "demo"
    prompts = None
    if prompt_file:  # read, and compared with the checkpoint's prompt set, before anything is written
        prompts = check_inputs(cfg, run_dir, start)
    save_run_tokenizer(cfg, run_dir)  # fails early with a one-line error; the archive decodes with it
    if cfg.stage == "rl" and cfg.eval.every > 0:  # the eval prompts: read and fitted to the context now
        from hpc_rlhf.roles.evaluator import check_eval_inputs

        check_eval_inputs(cfg, run_dir)
    if cfg.model.lora.r > 0:  # adapters on modules the policy has (its architecture, no weights)
        from hpc_rlhf.models.lora import check_targets

        check_targets(cfg, run_dir)
    if cfg.stage != "rl":  # sft, rm: their data, read and checked row by row before any rank starts
        longest = check_stage_data(cfg, run_dir)
        if cfg.stage == "sft":
            from hpc_rlhf.models.context import check_context

            what = f"the longest SFT example (sft.max_len={cfg.sft.max_len} cuts longer ones)"
            check_context(cfg, longest, what, fix="set a lower sft.max_len")
    else:
        if not prompt_file:
            check_inputs(cfg, run_dir, start)  # the demo's prompts: the reward model's tokenizer only
        check_rl_context(cfg, run_dir, prompts)
    from hpc_rlhf.models.context import reward_model_used

    if cfg.model.reward_path is None and reward_model_used(cfg):
        print(
            f"warning: model.reward_path is unset: {cfg.algo.name} runs against a randomly initialised reward model "
            "(train one with `hpc-rlhf train-rm`, or reward with functions only: reward.sources)",
            file=sys.stderr,
        )
    if prompts is not None:  # rendered once: every rank reads RUN_DIR/prompts.h5 instead of the prompt file
        from hpc_rlhf.rollout.prompt_file import prompts_sha256, write_prompts

        if prompts_sha256(run_dir, cfg) != prompts.sha256:
            write_prompts(run_dir, cfg, prompts.flat())
    with open(RunDir(run_dir).config, "w") as f:
        f.write(to_yaml(cfg))
    return cfg, run_dir


def check_stage_data(cfg: Config, run_dir: str) -> int:
    """Read a supervised stage's data as its ranks will (a one-line UserError naming file, row and fix).
    Returns the tokens of its longest example (SFT; 0 for pairs)."""
    from hpc_rlhf.models.build import load_tokenizer

    tok = load_tokenizer(cfg, run_dir)
    if cfg.stage == "sft":
        from hpc_rlhf.data.sft import load_examples

        examples, _ = load_examples(cfg, tok)
        return max(len(e.ids) for e in examples)
    from hpc_rlhf.data.pairs import load_pairs

    load_pairs(cfg, tok)  # the demo's pairs (None) are synthesised: nothing to read
    return 0


def check_rl_context(cfg: Config, run_dir: str, prompts) -> None:
    """The longest prompt (task.max_prompt_tokens when set, else the longest of the prompt file, or the demo's
    task.prompt_len_max) + generate.max_new_tokens fits every model's context (models/context.py)."""
    from hpc_rlhf.models.context import check_context

    t, new = cfg.task, cfg.generate.max_new_tokens
    if prompts is None:
        tokens, what, fix = t.prompt_len_max, f"task.prompt_len_max={t.prompt_len_max}", "lower them"
    elif t.name == "dataset" and t.max_prompt_tokens > 0:
        tokens, what, fix = t.max_prompt_tokens, f"task.max_prompt_tokens={t.max_prompt_tokens}", "lower them"
    else:
        tokens = prompts.longest()
        what, fix = f"the longest prompt of task.prompts_path ({tokens} tokens)", "set task.max_prompt_tokens"
        fix += " (task.name=dataset) or lower generate.max_new_tokens"
    shares = True
    if cfg.model.reward_path is not None:
        from hpc_rlhf.models.build import load_tokenizer
        from hpc_rlhf.models.retokenize import RewardTokens

        shares = RewardTokens.of(cfg, load_tokenizer(cfg, run_dir)) is None
    check_context(cfg, tokens + new, f"{what} + generate.max_new_tokens={new}", fix, shares)


def check_inputs(cfg: Config, run_dir: str, start: str | None = None):
    """Read the prompt file (every row: columns, non-empty, chat template, length) and the reward model's
    tokenizer now, so that bad data is a one-line UserError naming file, row and fix before any rank starts
    or any Slurm job is queued, never a failed job. `start`: the checkpoint a resume continues from, whose
    prompt set the file must still render to (rollout/prompt_store.py). Returns the PromptSet (None: demo)."""
    from hpc_rlhf.models.context import reward_model_used

    model_rm = cfg.model.reward_path is not None and reward_model_used(cfg)
    if cfg.task.name == "demo" and not model_rm:
        return None
    from hpc_rlhf.models.build import load_tokenizer
    from hpc_rlhf.models.retokenize import RewardTokens
    from hpc_rlhf.rollout.prompts import PromptSet

    tok = load_tokenizer(cfg, run_dir)
    prompts = None
    if cfg.task.name != "demo":
        prompts = PromptSet(cfg, tok)
        if start is not None:
            from hpc_rlhf.checkpoint.train_state import saved_prompt_set
            from hpc_rlhf.rollout.prompt_store import check_same_prompts

            check_same_prompts(saved_prompt_set(start), prompts.sha256, start, cfg.task.prompts_path)
    if (
        model_rm
        and RewardTokens.of(cfg, tok) is not None
        and advantage_estimator(cfg.algo.name).critic
        and cfg.model.value_init == "reward"
    ):
        raise UserError(
            f"the reward model '{cfg.model.reward_path}' has a tokenizer of its own, so the value model (which "
            "reads the policy's tokens) cannot start from it; set model.value_init=policy"
        )
    return prompts
