"""The whole recipe on Slurm: SFT, reward model and RL as three jobs chained with `--dependency=afterok`.

    hpc-rlhf submit-recipe CONFIG [key=value ...] [--dry-run]     # RUN_DIR holds sft/, rm/, rl/ and recipe.json
    hpc-rlhf status RUN_DIR                                        # the chain: each stage's job, state, progress

One config describes the three stages (its `sft:`, `rm:` and RL sections); RUN_DIR is the recipe's folder and
each stage is a run dir of its own in it (rundir.RECIPE_STAGES), whose output is the next stage's input:

    sft  stage=sft, run_dir RUN_DIR/sft                       -> RUN_DIR/sft/final/policy
    rm   stage=rm,  run_dir RUN_DIR/rm, model.policy_path = the SFT policy (the reward model starts from it)
                                                              -> rm.out_dir (default RUN_DIR/rm/reward_model)
    rl   stage=rl,  run_dir RUN_DIR/rl, model.policy_path = the SFT policy, model.reward_path = the reward model

Before anything is queued: the SFT stage is prepared as `submit` prepares a run (its data read row by row),
the reward model's pairs are read with the same tokenizer, the RL stage's prompt file is read and its
longest sequence checked against the models' context, and every stage's config is validated; a bad one is a
one-line error and nothing is submitted. The SFT and reward-model jobs run on one node
(slurm.nodes=1, sft.ranks / rm.ranks tasks); RL takes the config's Slurm shape. Job 2 waits for job 1 and job 3
for job 2 (`afterok`, with `--kill-on-invalid-dep=yes`: a failed stage cancels the rest of the chain instead
of leaving it pending). A preempted or timed-out stage requeues itself (launch/slurm_job.py): the same job id,
so its dependants keep waiting, and it resumes from its checkpoint; the chain never restarts. The stage jobs
run `python -m hpc_rlhf.launch.recipe STAGE_RUN_DIR`: rank 0 saves the stage's tokenizer (the previous stage's
output did not exist at submission), then the worker runs as under `submit`. `--dry-run` prints the three
sbatch scripts (the dependencies as placeholders) and touches nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from hpc_rlhf.config import Config, to_yaml, validate
from hpc_rlhf.errors import UserError
from hpc_rlhf.rundir import RECIPE_STAGES, RunDir, write_atomic

STAGE_WORKER = "hpc_rlhf.launch.recipe"


def stage_configs(cfg: Config) -> dict[str, Config]:
    """The config of each stage of the recipe whose folder is cfg.run_dir (see the module docstring)."""
    rd = RunDir(os.path.abspath(cfg.run_dir))
    sft_dir, rm_dir, rl_dir = (rd.recipe_stage(s) for s in RECIPE_STAGES)
    policy = RunDir(sft_dir).final_policy
    reward = cfg.rm.out_dir or RunDir(rm_dir).reward_model
    one_node = dataclasses.replace(cfg.slurm, nodes=1, tasks_per_node=0)
    r = dataclasses.replace
    return {
        "sft": r(cfg, stage="sft", run_dir=sft_dir, slurm=one_node),
        "rm": r(
            cfg,
            stage="rm",
            run_dir=rm_dir,
            slurm=one_node,
            model=r(cfg.model, policy_path=policy, reward_path=None),
            rm=r(cfg.rm, out_dir=reward),
        ),
        "rl": r(cfg, stage="rl", run_dir=rl_dir, model=r(cfg.model, policy_path=policy, reward_path=reward)),
    }


def _with_dependency(cfg: Config, after: str) -> Config:
    extra = [*cfg.slurm.extra_sbatch, f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
    return dataclasses.replace(cfg, slurm=dataclasses.replace(cfg.slurm, extra_sbatch=extra))


def _check(cfg: Config, stages: dict[str, Config]) -> None:
    """Every stage's config validates (the paths of outputs not yet written stand in as the user's own)."""
    for name, st in stages.items():
        validate(dataclasses.replace(st, model=cfg.model, rm=cfg.rm) if name != "sft" else st)


def submit_recipe(
    cfg: Config, config_path: Optional[str] = None, dry_run: bool = False, out: Optional[TextIO] = None
) -> dict:
    """Submit (or with dry_run print) the three chained jobs; returns {stage: job id or None}."""
    from hpc_rlhf.launch.slurm_submit import require_slurm

    out = out or sys.stdout
    stages = stage_configs(cfg)
    _check(cfg, stages)
    root = os.path.abspath(cfg.run_dir)
    if dry_run:
        _print_chain(stages, root, out)
        return {name: None for name in stages}
    require_slurm()
    _prepare(cfg, stages)
    jobs = _submit_chain(stages, config_path, root, out)
    chain = {
        "config": config_path,
        "submitted_unix": time.time(),
        "stages": [{"stage": n, "run_dir": stages[n].run_dir, "job_id": jobs[n]} for n in stages],
    }
    write_atomic(RunDir(root).recipe, json.dumps(chain, indent=1).encode())
    out.write(f"status: hpc-rlhf status {root}\n")
    out.flush()
    return jobs


def _print_chain(stages: dict[str, Config], root: str, out: TextIO) -> None:
    """--dry-run: the three sbatch scripts, each stage's dependency on the one before as a placeholder."""
    from hpc_rlhf.launch.slurm_submit import render_sbatch

    prev = None
    for name, st in stages.items():
        shown = _with_dependency(st, f"<job id of {prev}>") if prev else st
        out.write(f"# ---- stage {name}: {st.run_dir} ({st.world_size} tasks)\n")
        out.write(render_sbatch(shown, Path(st.run_dir)).rstrip("\n") + "\n")
        prev = name
    out.write(f"# dry run: nothing submitted; recipe folder {root}\n")


def _submit_chain(stages: dict[str, Config], config_path: Optional[str], root: str, out: TextIO) -> dict[str, str]:
    """Queue the prepared stages in order through the one submitter, each after the one before (afterok)."""
    from hpc_rlhf.launch.slurm_submit import submit_job

    jobs: dict[str, str] = {}
    prev = None
    for name, st in stages.items():
        shaped = _with_dependency(st, jobs[prev]) if prev else st
        try:
            jobs[name], _ = submit_job(
                shaped, STAGE_WORKER, what=f"the {name} job", config=config_path, recipe=root, after=jobs.get(prev)
            )
        except UserError as e:
            raise UserError(f"{e} (submitted before it: {jobs})") from None
        out.write(f"submitted {name} job {jobs[name]}{' (after ' + jobs[prev] + ')' if prev else ''}: {st.run_dir}\n")
        prev = name
    return jobs


def _prepare(cfg: Config, stages: dict[str, Config]) -> None:
    """Stage folders, configs and code snapshots; the SFT data and the pairs read before anything is queued."""
    from hpc_rlhf.data.pairs import load_pairs
    from hpc_rlhf.launch.lease import check_free
    from hpc_rlhf.launch.slurm_events import check_no_active_job
    from hpc_rlhf.launch.slurm_submit import prepare_run_dir, snapshot_code
    from hpc_rlhf.models.build import load_tokenizer

    for st in stages.values():
        check_no_active_job(Path(st.run_dir))
        check_free(st.run_dir)
    own_tokenizer = cfg.model.tokenizer_path or cfg.model.policy_path
    if own_tokenizer:  # first, so that a fix of the RL prompt file finds no SFT stage prepared yet
        _check_rl_inputs(cfg, stages, None)
    prepare_run_dir(stages["sft"])  # prepare_run: tokenizer, the SFT data read, config.yaml
    if not own_tokenizer:  # the demo's tokenizer, which preparing the SFT stage built
        _check_rl_inputs(cfg, stages, stages["sft"].run_dir)
    tok = load_tokenizer(stages["sft"], stages["sft"].run_dir)
    load_pairs(dataclasses.replace(stages["rm"], model=cfg.model), tok)
    for name in ("rm", "rl"):
        st = stages[name]
        os.makedirs(RunDir(st.run_dir).slurm, exist_ok=True)
        write_atomic(RunDir(st.run_dir).config, to_yaml(st).encode())
        if st.slurm.snapshot_code:
            snapshot_code(Path(st.run_dir))


def _check_rl_inputs(cfg: Config, stages: dict[str, Config], tokenizer_dir: Optional[str]) -> None:
    """The RL stage's prompt file (every row) and its context length, as `submit` checks a run's: its policy
    and reward model are not written yet, so the user's models stand in (the SFT policy keeps their tokenizer
    and context; the reward model starts from it)."""
    from hpc_rlhf.launch.prepare import check_inputs, check_rl_context

    rl_now = dataclasses.replace(stages["rl"], model=cfg.model)
    check_rl_context(rl_now, tokenizer_dir, check_inputs(rl_now, tokenizer_dir))


def recipe_status(root: str | Path, out: Optional[TextIO] = None) -> list[dict]:
    """Print and return each stage's job, Slurm state and progress (`hpc-rlhf status RUN_DIR` of a recipe)."""
    from hpc_rlhf.launch.slurm_runs import progress, slurm_state

    out = out or sys.stdout
    with open(RunDir(str(root)).recipe) as f:
        chain = json.load(f)
    rows = []
    out.write(f"recipe: {root}\n")
    for s in chain["stages"]:
        info = slurm_state(s["job_id"])
        prog = progress(s["run_dir"])
        done = os.path.exists(RunDir(s["run_dir"]).final_policy) if s["stage"] != "rm" else None
        row = {**s, "state": info.get("state"), "restarts": info.get("restarts"), **prog}
        rows.append(row)
        extra = f", restarts {info['restarts']}" if info.get("restarts") else ""
        why = f" ({info['reason']})" if info.get("state") == "PENDING" and info.get("reason") else ""
        out.write(
            f"  {s['stage']:<3} job {s['job_id']:<8} {str(info.get('state') or 'UNKNOWN'):<10}{why}{extra}  "
            f"step {'-' if prog['step'] is None else prog['step']}, checkpoint {prog['checkpoint'] or '-'}"
            f"{', exported' if done else ''}  {s['run_dir']}\n"
        )
    out.flush()
    return rows


def _stage_main(run_dir: str) -> None:
    """In a stage job (every task): rank 0 saves the stage's tokenizer, then the worker runs."""
    if os.environ.get("SLURM_PROCID", "0") == "0" and not RunDir(run_dir).has_tokenizer:
        from hpc_rlhf.config import load_config
        from hpc_rlhf.stages.tokenizer import save_run_tokenizer

        save_run_tokenizer(load_config(RunDir(run_dir).config), run_dir)
    sys.argv = ["hpc_rlhf.launch.worker", run_dir]
    runpy.run_module("hpc_rlhf.launch.worker", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _stage_main(sys.argv[1])
