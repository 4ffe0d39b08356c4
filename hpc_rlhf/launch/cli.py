"""`hpc-rlhf`: the command line.

    hpc-rlhf demo [key=value ...]              # the embedded default: RM stage + multi-rank PPO + report
    hpc-rlhf train CONFIG [key=value ...]      # PPO (resumes when RUN_DIR holds a checkpoint)
    hpc-rlhf resume RUN_DIR                    # continue a stopped run locally (see also: submit/resume)
    hpc-rlhf train-rm CONFIG [key=value ...]   # reward model on preference pairs (Bradley-Terry; rm.ranks)
    hpc-rlhf sft CONFIG [key=value ...]        # supervised fine-tuning (sft.ranks); exports RUN_DIR/final/policy
    hpc-rlhf submit-recipe CONFIG [--dry-run]  # SFT -> reward model -> RL as three chained Slurm jobs
    hpc-rlhf checkpoints RUN_DIR               # committed checkpoints: step, time, size, validity
    hpc-rlhf submit CONFIG [key=value ...] [--dry-run]   # a run as one Slurm job (submitit)
    hpc-rlhf status|cancel|logs RUN_DIR        # a run on Slurm (a recipe's folder: the chain of its jobs)
    hpc-rlhf job hold|prepare|requeue|end RUN_DIR ...   # the steps of the sbatch template jobs/ppo.sbatch
    hpc-rlhf archive summary|show|export|plot|verify RUN_DIR   # defined by hpc_rlhf/archive/cli.py

Every command is defined here (the archive's in its own package); each handler calls the module that does
the work: prepare.py and run.py (a run here), slurm_submit.py (the one submitter), slurm_runs.py (a run on
Slurm), recipe.py, sbatch_steps.py, demo.py. Errors caused by input print one line, `error: ...`, and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from hpc_rlhf.errors import UserError
from hpc_rlhf.rundir import RunDir


def _owned(cfg, command: str):
    """This command owns the run directory while it runs (launch/lease.py); refused when another does."""
    from hpc_rlhf.launch.lease import owned

    return owned(os.path.abspath(cfg.run_dir), command, cfg.runtime.lease_ttl_s)


def _run_here(cfg, command: str) -> int:
    """Prepare the run, then run it on this machine, owning its run directory meanwhile."""
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.run import run_local

    with _owned(cfg, command):
        return run_local(*prepare_run(cfg))


def _cmd_train(args) -> int:
    from hpc_rlhf.config import load_config

    return _run_here(load_config(args.config, args.overrides), "train")


def _cmd_resume(args) -> int:
    from hpc_rlhf.config import load_config

    path = RunDir(args.run_dir).config
    if not os.path.exists(path):
        raise UserError(f"'{args.run_dir}' is not a run directory (no config.yaml)")
    return _run_here(dataclasses.replace(load_config(path, args.overrides), run_dir=args.run_dir), "resume")


def _cmd_checkpoints(args) -> int:
    from hpc_rlhf.checkpoint.store import list_checkpoints
    from hpc_rlhf.launch.lease import describe, owner

    holder = owner(args.run_dir)
    print(f"owner: {describe(holder) if holder else 'none (no run holds this run dir)'}")
    infos = list_checkpoints(args.run_dir)
    if not infos:
        print(f"no checkpoints in {args.run_dir}")
        return 1
    print(f"{'step':>6}  {'saved':19}  {'size_MB':>8}  valid")
    for i in infos:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_unix)) if i.created_unix else "-"
        print(f"{i.step:>6}  {t:19}  {i.size_bytes / 1e6:8.2f}  {'yes' if i.valid else 'NO: ' + i.problem}")
    return 0


def _cmd_stage(args) -> int:
    """`sft` and `train-rm`: the supervised stages, run like `train` (mpiexec -n sft.ranks / rm.ranks, resume)."""
    from hpc_rlhf.config import load_config

    return _run_here(load_config(args.config, [*args.overrides, f"stage={args.stage}"]), args.command)


def _cmd_recipe(args) -> int:
    from hpc_rlhf.config import load_config
    from hpc_rlhf.launch.recipe import submit_recipe

    submit_recipe(load_config(args.config, args.overrides), args.config, dry_run=args.dry_run)
    return 0


def _cmd_demo(args) -> int:
    from hpc_rlhf.launch.demo import run_demo

    return run_demo(args.config, args.overrides)


def _cmd_submit(args) -> int:
    from hpc_rlhf.config import load_config
    from hpc_rlhf.launch.slurm_submit import submit

    submit(load_config(args.config, args.overrides), args.config, args.dry_run)
    return 0


def _cmd_status(args) -> int:
    if os.path.exists(RunDir(str(args.run_dir)).recipe):  # a recipe's folder: the chain of its three jobs
        from hpc_rlhf.launch.recipe import recipe_status

        recipe_status(args.run_dir)
        return 0
    from hpc_rlhf.launch.slurm_runs import status

    status(args.run_dir)
    return 0


def _cmd_cancel(args) -> int:
    from hpc_rlhf.launch.slurm_runs import cancel

    cancel(args.run_dir)
    return 0


def _cmd_logs(args) -> int:
    from hpc_rlhf.launch.slurm_runs import logs

    return logs(args.run_dir, args.rank)


def _cmd_job(args) -> int:
    """jobs/ppo.sbatch's steps (launch/sbatch_steps.py), inside the batch job."""
    from hpc_rlhf.launch import sbatch_steps

    if args.step == "prepare":
        return sbatch_steps.prepare(args.run_dir, args.config, tuple(args.overrides))
    if args.step == "hold":
        return sbatch_steps.hold(args.run_dir)
    if args.step == "requeue":
        return sbatch_steps.requeue(args.run_dir, args.if_exit)
    return sbatch_steps.end(args.run_dir, args.status)


def _local_parsers(sub) -> None:
    """The commands that run here: train, resume, train-rm, sft, demo, checkpoints."""
    p = sub.add_parser("train", help="PPO training (resumes from RUN_DIR's latest checkpoint)")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("resume", help="continue a run from its latest checkpoint, locally")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="resume-safe overrides (e.g. total_steps=80)")
    p.set_defaults(func=_cmd_resume)
    p = sub.add_parser("train-rm", help="train the reward model on preference pairs (resumes a stopped run)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_stage, stage="rm")
    p = sub.add_parser("sft", help="supervised fine-tuning on prompt/response or chat data (resumes a stopped run)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_stage, stage="sft")
    p = sub.add_parser("demo", help="the synthetic gold-rule demo: RM stage, PPO, report")
    p.add_argument("--config", default=None, help="YAML config (default: configs/demo.yaml values, embedded)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("checkpoints", help="list committed checkpoints")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_checkpoints)


def _slurm_parsers(sub) -> None:
    """The commands for Slurm: submit, submit-recipe, status, cancel, logs, and the template's `job` steps."""
    p = sub.add_parser("submit", help="submit a run to Slurm (submitit)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and submit nothing")
    p.set_defaults(func=_cmd_submit)
    p = sub.add_parser("submit-recipe", help="SFT, reward model and RL as three chained Slurm jobs")
    p.add_argument("config", help="YAML config with sft:, rm: and the RL sections (RUN_DIR holds the three stages)")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--dry-run", action="store_true", help="print the three sbatch scripts; submit nothing")
    p.set_defaults(func=_cmd_recipe)
    p = sub.add_parser("status", help="Slurm state and progress of a run")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("cancel", help="cancel the Slurm job of a run")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_cancel)
    p = sub.add_parser("logs", help="print the Slurm logs of a run's tasks")
    p.add_argument("run_dir")
    p.add_argument("--rank", type=int, default=None, help="only this task (default: every task)")
    p.set_defaults(func=_cmd_logs)
    job = sub.add_parser("job", help="the steps of the sbatch template jobs/ppo.sbatch (inside its job)")
    steps = job.add_subparsers(dest="step", required=True)
    p = steps.add_parser("prepare", help="write/check RUN_DIR/config.yaml and the task count")
    p.add_argument("run_dir")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*")
    p = steps.add_parser("hold", help="own RUN_DIR (its lease) for this job until stdin closes")
    p.add_argument("run_dir")
    p = steps.add_parser("requeue", help="scontrol requeue $SLURM_JOB_ID, counted against slurm.max_requeues")
    p.add_argument("run_dir")
    p.add_argument("--if-exit", type=int, default=None, help="only if this is runtime.requeue_exit_code")
    p = steps.add_parser("end", help="record the job's end in jobs.jsonl, unless STATUS asks for a requeue")
    p.add_argument("run_dir")
    p.add_argument("status", type=int, help="the ranks' exit status (srun's)")
    job.set_defaults(func=_cmd_job)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hpc-rlhf", description="HPC-native RLHF (PPO) trainer")
    sub = ap.add_subparsers(dest="command", required=True)
    _local_parsers(sub)
    _slurm_parsers(sub)
    from hpc_rlhf.archive.cli import add_subparsers as archive_parsers

    archive_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
