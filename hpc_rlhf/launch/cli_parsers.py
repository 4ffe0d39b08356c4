"""The declaration of `hpc-rlhf`'s commands and arguments (launch/cli.py wires them to its handlers).

    ap = build({"train": handler, ...}, "0.1.0")
    args = ap.parse_args(["submit", "configs/demo.yaml", "--dry-run", "seed=3"])   # any order

Every command and argument has a help line; where the form is not obvious, the command's help ends with
examples. A `key=value` word anywhere after the command is a config override, wherever the flags are; any
other word argparse does not know, and every parse error, is one `UserError` line (the CLI exits 2) with a
hint where the mistake is a common one (`--seed=3` for `seed=3`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handlers = dict[str, Callable[[argparse.Namespace], int]]
OVERRIDES_HELP = "config overrides, e.g. seed=3 ppo.lr=1e-5 (any order with the flags)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (a UserError for the CLI to print) and overrides in any position."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message: str):  # type: ignore[override]
        from hpc_rlhf.errors import UserError

        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        ns, extra = self.parse_known_args(args, namespace)
        return fold_overrides(ns, extra)


def fold_overrides(ns: argparse.Namespace, extra: list[str]) -> argparse.Namespace:
    """The words argparse left over: key=value ones join ns.overrides; anything else is an error."""
    from hpc_rlhf.errors import UserError

    cmd = f"hpc-rlhf {getattr(ns, 'command', '')}".strip()
    for word in extra:
        if "=" in word and not word.startswith("-") and hasattr(ns, "overrides"):
            ns.overrides.append(word)
            continue
        key = word.lstrip("-").split("=", 1)[0]
        if word.startswith("--") and _is_config_key(key):
            value = word.split("=", 1)[1] if "=" in word else "VALUE"
            raise UserError(f"{cmd}: '{word}' is not an option; config values are key=value overrides: {key}={value}")
        raise UserError(f"{cmd}: unrecognized argument '{word}' (see {cmd} --help)")
    return ns


def _is_config_key(key: str) -> bool:
    from hpc_rlhf.config import describe

    return any(k.key == key or k.key.startswith(key + ".") for k in describe.keys())


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _cmd(sub: Any, name: str, help_: str, func: Callable, *examples: str, **defaults: Any) -> Parser:
    p = sub.add_parser(name, help=help_, description=help_, epilog=_examples(*examples) if examples else None)
    p.set_defaults(func=func, **defaults)
    return p


def _local(sub: Any, h: Handlers) -> None:
    """The commands that run here: train, resume, train-rm, sft, demo."""
    p = _cmd(sub, "train", "RL training here (mpiexec -n WORLD); resumes from RUN_DIR's latest checkpoint", h["train"],
             "hpc-rlhf train configs/tiny.yaml run_dir=runs/tiny", "hpc-rlhf train configs/grpo.yaml total_steps=80 seed=1")  # fmt: skip
    p.add_argument("config", help="YAML config (see configs/; every key: hpc-rlhf config --keys)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p = _cmd(sub, "resume", "continue a stopped run here from its latest checkpoint (its own config.yaml)", h["resume"],
             "hpc-rlhf resume runs/tiny", "hpc-rlhf resume runs/tiny total_steps=80   # resume-safe keys only")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of the run to continue")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="resume-safe overrides (hpc-rlhf config --keys)")
    for name, stage, what in (("train-rm", "rm", "the reward model on preference pairs"),
                              ("sft", "sft", "supervised fine-tuning on prompt/response or chat data")):  # fmt: skip
        p = _cmd(sub, name, f"{what} (resumes a stopped run)", h["stage"],
                 f"hpc-rlhf {name} configs/tiny.yaml run_dir=runs/{stage} {stage}.ranks=2", stage=stage)  # fmt: skip
        p.add_argument("config", help=f"YAML config with a {stage}: section (docs/your_model.md)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p = _cmd(sub, "demo", "the synthetic gold-rule demo: reward-model stage, PPO, report (no data, no downloads)",
             h["demo"], "hpc-rlhf demo run_dir=runs/demo", "hpc-rlhf demo --config configs/grpo.yaml run_dir=runs/grpo")  # fmt: skip
    p.add_argument("--config", default=None, help="YAML config (default: configs/demo.yaml's values, embedded)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)


def _inspect(sub: Any, h: Handlers) -> None:
    """The commands that look: config, status, plot, checkpoints, mpi."""
    p = _cmd(sub, "config", "print the resolved config (YAML), or list every key with its doc and default",
             h["config"], "hpc-rlhf config configs/tiny.yaml seed=3", "hpc-rlhf config --keys",
             "hpc-rlhf config --keys slurm   # one section")  # fmt: skip
    p.add_argument(
        "config", nargs="?", default=None, help="YAML config to resolve (schema defaults <- file <- overrides)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p.add_argument("--keys", nargs="?", const="", default=None, metavar="SECTION",
                   help="list every key (or a section's): default, type, whether it may change on resume, its doc")  # fmt: skip
    p = _cmd(sub, "status", "where a run stands, local or on Slurm: step / total, rate, ETA, last metrics, owner, "
             "checkpoint, Slurm attempts", h["status"], "hpc-rlhf status runs/tiny")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (a recipe's folder: its chain of jobs)")
    p = _cmd(sub, "plot", "draw metrics.jsonl: rewards, KL, losses, entropy, lengths, throughput (RL, SFT or RM run)",
             h["plot"], "hpc-rlhf plot runs/tiny              # runs/tiny/metrics.png + metrics_plot.json",
             "hpc-rlhf plot runs/tiny --out /tmp/tiny.png")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--out", default=None, metavar="PNG", help="the figure's path (default RUN_DIR/metrics.png); "
                   "the plotted points go beside it as .json")  # fmt: skip
    p = _cmd(sub, "checkpoints", "list a run's committed checkpoints: step, time, size, validity", h["checkpoints"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p = _cmd(sub, "mpi", "which MPI library mpi4py runs on, its local launcher and the srun plugin `auto` picks",
             h["mpi"], "hpc-rlhf mpi", "hpc-rlhf mpi --mpiexec /usr/bin/mpiexec   # check Open MPI's launcher")  # fmt: skip
    p.add_argument("--mpiexec", default="mpiexec", metavar="EXE", help="the local launcher to check (runtime.mpiexec)")


def _slurm(sub: Any, h: Handlers) -> None:
    """The commands for Slurm: submit, submit-recipe, cancel, logs, and the template's `job` steps."""
    p = _cmd(sub, "submit", "submit a run to Slurm (submitit), or submit a stopped run again with --resume",
             h["submit"], "hpc-rlhf submit configs/tiny.yaml run_dir=/shared/runs/tiny slurm.partition=gpu",
             "hpc-rlhf submit configs/tiny.yaml --dry-run   # print the sbatch script only",
             "hpc-rlhf submit --resume /shared/runs/tiny   # after a failed, cancelled or timed-out job",
             "hpc-rlhf submit --resume /shared/runs/tiny total_steps=200 slurm.timeout_min=240")  # fmt: skip
    p.add_argument("config", nargs="?", default=None, help="YAML config file (not with --resume)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP + "; with --resume, resume-safe only"
    )
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="submit this run dir's run again from its config.yaml and latest checkpoint")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and submit nothing")
    p = _cmd(sub, "submit-recipe", "SFT, reward model and RL as three chained Slurm jobs", h["submit-recipe"],
             "hpc-rlhf submit-recipe configs/recipe.yaml run_dir=/shared/runs/r1 --dry-run")  # fmt: skip
    p.add_argument("config", help="YAML config with sft:, rm: and the RL sections (RUN_DIR holds the three stages)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the three sbatch scripts; submit nothing")
    p = _cmd(sub, "cancel", "cancel the Slurm job of a run (it will not requeue itself)", h["cancel"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p = _cmd(
        sub, "logs", "print the Slurm logs of a run's tasks (latest job)", h["logs"], "hpc-rlhf logs runs/x --rank 1"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--rank", type=int, default=None, help="only this task (default: every task)")
    _job(sub, h)


def _job(sub: Any, h: Handlers) -> None:
    job = _cmd(sub, "job", "the steps of the sbatch template jobs/ppo.sbatch (run inside its job)", h["job"])
    steps = job.add_subparsers(dest="step", required=True, metavar="STEP", help="hold, prepare, requeue or end")
    p = steps.add_parser("prepare", help="write/check RUN_DIR/config.yaml and the task count")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("config", nargs="?", help="YAML config (default: RUN_DIR/config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    p = steps.add_parser("hold", help="own RUN_DIR (its lease) for this job until stdin closes")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p = steps.add_parser("requeue", help="scontrol requeue $SLURM_JOB_ID, counted against slurm.max_requeues")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("--if-exit", type=int, default=None, help="only if this is runtime.requeue_exit_code")
    p = steps.add_parser("end", help="record the job's end in jobs.jsonl, unless STATUS asks for a requeue")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    p.add_argument("status", type=int, help="the ranks' exit status (srun's)")


def build(handlers: Handlers, version: str) -> Parser:
    """The `hpc-rlhf` parser: every command, each with func=its handler."""
    ap = Parser(prog="hpc-rlhf", description="hpc-rlhf: an HPC-native RLHF trainer (PPO, GRPO, RLOO, REINFORCE++; "
                "SFT and reward models) for MPI and Slurm. `hpc-rlhf COMMAND --help` shows a command's form.",
                epilog=_examples("hpc-rlhf demo run_dir=runs/demo", "hpc-rlhf train configs/tiny.yaml run_dir=runs/tiny",
                                 "hpc-rlhf status runs/tiny", "hpc-rlhf submit --resume /shared/runs/tiny"))  # fmt: skip
    ap.add_argument("--version", action="version", version=f"hpc-rlhf {version}", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    _local(sub, handlers)
    _inspect(sub, handlers)
    _slurm(sub, handlers)
    from hpc_rlhf.archive.cli import add_subparsers as archive_parsers

    archive_parsers(sub)
    return ap
