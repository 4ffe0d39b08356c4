"""`hpc-rlhf`: the command line. `hpc-rlhf` alone prints the commands, `hpc-rlhf COMMAND --help` each one's form.

    hpc-rlhf demo [--config FILE] [key=value ...]        # the gold-rule demo: RM stage + multi-rank PPO + report
    hpc-rlhf train CONFIG [key=value ...]                # RL (resumes when RUN_DIR holds a checkpoint)
    hpc-rlhf resume RUN_DIR [key=value ...]              # continue a stopped run here
    hpc-rlhf train-rm | sft CONFIG [key=value ...]       # the supervised stages (rm.ranks / sft.ranks)
    hpc-rlhf config CONFIG [key=value ...] | --keys [SECTION]   # the resolved config; every key documented
    hpc-rlhf status RUN_DIR | plot RUN_DIR | checkpoints RUN_DIR  # where a run stands; its curves; checkpoints
    hpc-rlhf submit CONFIG [key=value ...] [--dry-run]   # a run as one Slurm job (submitit)
    hpc-rlhf submit --resume RUN_DIR [key=value ...]     # a failed, cancelled or stopped run, submitted again
    hpc-rlhf submit-recipe CONFIG [--dry-run]            # SFT -> reward model -> RL as three chained Slurm jobs
    hpc-rlhf cancel | logs RUN_DIR                       # a run on Slurm
    hpc-rlhf job hold|prepare|requeue|end RUN_DIR ...    # the steps of the sbatch template jobs/ppo.sbatch
    hpc-rlhf archive summary|show|export|plot|verify RUN_DIR   # defined by hpc_rlhf/archive/cli.py

Every command is defined here (the archive's in its own package); each handler calls the module that does
the work: prepare.py and run.py (a run here), slurm_submit.py (the one submitter), slurm_runs.py (a run on
Slurm, and `status` of any run), recipe.py, sbatch_steps.py, demo.py, monitor/ (plot), config/describe.py.
Flags and `key=value` overrides mix in any order. Errors caused by input print one line, `error: ...`, and
exit 2, before anything is written or queued.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from hpc_rlhf import __version__
from hpc_rlhf.errors import UserError
from hpc_rlhf.launch import cli_parsers
from hpc_rlhf.rundir import RunDir

__all__ = ["build_parser", "main"]


def _owned(cfg, command: str):
    """This command owns the run directory while it runs (launch/lease.py); refused when another does."""
    from hpc_rlhf.launch.lease import owned

    return owned(os.path.abspath(cfg.run_dir), command, cfg.runtime.lease_ttl_s)


def _run_here(cfg, command: str) -> int:
    """Prepare the run, then run it on this machine, owning its run directory meanwhile."""
    from hpc_rlhf.launch.prepare import prepare_run
    from hpc_rlhf.launch.run import check_startable, run_local

    check_startable(cfg)  # before the lease or any file is written
    with _owned(cfg, command):
        return run_local(*prepare_run(cfg))


def _load(config: str, overrides: list[str]):
    from hpc_rlhf.config import load_config

    return load_config(config, overrides)


def _run_dir_config(run_dir: str, overrides: list[str]):
    """The config of an existing run dir (RUN_DIR/config.yaml) with `overrides`, run_dir set to it."""
    from hpc_rlhf.config import load_config

    path = RunDir(run_dir).config
    if not os.path.isfile(path):
        what = "does not exist" if not os.path.exists(run_dir) else "is not a run directory (no config.yaml)"
        raise UserError(f"'{run_dir}' {what}")
    return dataclasses.replace(load_config(path, overrides), run_dir=run_dir)


def _cmd_train(args) -> int:
    return _run_here(_load(args.config, args.overrides), "train")


def _cmd_resume(args) -> int:
    return _run_here(_run_dir_config(args.run_dir, args.overrides), "resume")


def _cmd_checkpoints(args) -> int:
    from hpc_rlhf.checkpoint.store import list_checkpoints
    from hpc_rlhf.launch.lease import describe, owner

    if not os.path.isdir(args.run_dir):
        raise UserError(f"run dir '{args.run_dir}' does not exist")
    holder = owner(args.run_dir)
    print(f"owner: {describe(holder) if holder else 'none (no run holds this run dir)'}")
    infos = list_checkpoints(args.run_dir)
    if not infos:
        print(f"no checkpoints in {args.run_dir}")
        return 0
    print(f"{'step':>6}  {'saved':19}  {'size_MB':>8}  valid")
    for i in infos:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_unix)) if i.created_unix else "-"
        print(f"{i.step:>6}  {t:19}  {i.size_bytes / 1e6:8.2f}  {'yes' if i.valid else 'NO: ' + i.problem}")
    return 0


def _cmd_stage(args) -> int:
    """`sft` and `train-rm`: the supervised stages, run like `train` (mpiexec -n sft.ranks / rm.ranks, resume)."""
    return _run_here(_load(args.config, [*args.overrides, f"stage={args.stage}"]), args.command)


def _cmd_recipe(args) -> int:
    from hpc_rlhf.launch.recipe import submit_recipe

    submit_recipe(_load(args.config, args.overrides), args.config, dry_run=args.dry_run)
    return 0


def _cmd_demo(args) -> int:
    from hpc_rlhf.launch.demo import run_demo

    stray = [o for o in args.overrides if "=" not in o]
    if stray:
        raise UserError(
            f"'{stray[0]}' is not key=value; the demo takes a config file as --config: "
            f"hpc-rlhf demo --config {stray[0]} [key=value ...]"
        )
    return run_demo(args.config, args.overrides)


def _cmd_submit(args) -> int:
    from hpc_rlhf.launch.run import check_startable
    from hpc_rlhf.launch.slurm_submit import submit

    if args.resume is not None:
        return _submit_resume(args)
    if args.config is None:
        raise UserError("submit needs a CONFIG (or --resume RUN_DIR for a run submitted before)")
    cfg = _load(args.config, args.overrides)
    check_startable(cfg, local=False)
    submit(cfg, args.config, args.dry_run)
    return 0


def _submit_resume(args) -> int:
    """`submit --resume RUN_DIR [key=value ...]`: the run's own config.yaml, resume-safe overrides only."""
    from hpc_rlhf.config import check_resumable
    from hpc_rlhf.launch.slurm_runs import resume

    overrides = ([args.config] if args.config is not None else []) + args.overrides
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(
            f"submit --resume takes the run's own config.yaml; '{bad[0]}' is not a key=value override "
            f"(e.g. hpc-rlhf submit --resume {args.resume} total_steps=80)"
        )
    saved = _run_dir_config(args.resume, [])
    check_resumable(saved, _run_dir_config(args.resume, overrides), f"run dir {args.resume}")
    resume(args.resume, args.dry_run, overrides=overrides)
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


def _cmd_config(args) -> int:
    from hpc_rlhf.config import describe, to_yaml

    if args.keys is not None:
        if args.config is not None or args.overrides:
            raise UserError("config --keys lists the schema's keys; it takes no CONFIG or overrides")
        known = {k.key.split(".")[0] for k in describe.keys()}
        if args.keys and not describe.keys(args.keys) and args.keys not in known:
            raise UserError(f"'{args.keys}' is not a config section; sections: {', '.join(sorted(known))}")
        print(describe.listing(args.keys))
        return 0
    if args.config is None:
        raise UserError(
            "config needs a CONFIG file (or --keys to list every key), e.g. hpc-rlhf config configs/demo.yaml"
        )
    sys.stdout.write(to_yaml(_load(args.config, args.overrides)))
    return 0


def _cmd_mpi(args) -> int:
    from hpc_rlhf.launch import site_mpi

    print(site_mpi.report(args.mpiexec))
    return 0


def _cmd_plot(args) -> int:
    from hpc_rlhf.monitor.plot import plot_run

    png, data = plot_run(args.run_dir, args.out)
    print(f"wrote {png} and {data}")
    return 0


HANDLERS = {
    "train": _cmd_train,
    "resume": _cmd_resume,
    "stage": _cmd_stage,
    "demo": _cmd_demo,
    "checkpoints": _cmd_checkpoints,
    "config": _cmd_config,
    "plot": _cmd_plot,
    "mpi": _cmd_mpi,
    "status": _cmd_status,
    "submit": _cmd_submit,
    "submit-recipe": _cmd_recipe,
    "cancel": _cmd_cancel,
    "logs": _cmd_logs,
    "job": _cmd_job,
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (launch/cli_parsers.py declares it) wired to this module's handlers."""
    return cli_parsers.build(HANDLERS, __version__)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
