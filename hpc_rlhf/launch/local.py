"""Prepare a run directory and start its ranks locally: `mpiexec -n WORLD python -m hpc_rlhf.launch.worker`.

    prepare_run(cfg)          # validate paths, resume check, write RUN_DIR/config.yaml, tokenizer
    code = launch_local(cfg)  # mpiexec in its own session; Ctrl-C/SIGTERM/SIGUSR2 -> USR2 to the ranks

A first Ctrl-C asks the ranks to checkpoint at the next step boundary and exit 75; a second one
kills them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from hpc_rlhf.checkpoint.store import find_latest, load_json
from hpc_rlhf.config import Config, from_dict, resume_diff, to_yaml
from hpc_rlhf.errors import ConfigError, UserError


def prepare_run(cfg: Config) -> str:
    """Create/check RUN_DIR before any rank starts. Returns the run dir (absolute)."""
    run_dir = os.path.abspath(cfg.run_dir)
    cfg.run_dir = run_dir
    os.makedirs(run_dir, exist_ok=True)
    info = find_latest(run_dir)
    if info is not None:
        saved = from_dict(load_json(info.path, "state.json")["config"])
        diff = resume_diff(saved, cfg)
        if diff:
            raise ConfigError(
                f"run_dir '{run_dir}' holds checkpoint {os.path.basename(info.path)} of a different config: "
                + "; ".join(diff)
                + " (only total_steps, logging.*, checkpoint.* intervals, runtime timeouts and slurm.* may change; use a new run_dir)"
            )
    if cfg.task.name == "demo" and not (cfg.model.tokenizer_path or cfg.model.policy_path):
        tok_dir = os.path.join(run_dir, "tokenizer")
        if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
            from hpc_rlhf.demo.task import build_tokenizer

            build_tokenizer(cfg.task.vocab_words, tok_dir)
    else:
        from hpc_rlhf.models.build import load_tokenizer

        tok = load_tokenizer(cfg, run_dir)  # fails early with a one-line error
        tok.save_pretrained(os.path.join(run_dir, "tokenizer"))  # the archive decodes with it
    if cfg.model.reward_path is None:
        print(
            "warning: model.reward_path is unset: PPO runs against a randomly initialised reward model "
            "(train one with `hpc-rlhf train-rm`)",
            file=sys.stderr,
        )
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    return run_dir


def mpiexec_command(cfg: Config, run_dir: str) -> list[str]:
    exe = shutil.which(cfg.runtime.mpiexec)
    if exe is None:
        raise UserError(
            f"runtime.mpiexec '{cfg.runtime.mpiexec}' not found on PATH; `pip install mpich` or point it at your site MPI"
        )
    world = cfg.layout.world_size
    return [exe, "-n", str(world), sys.executable, "-m", "hpc_rlhf.launch.worker", run_dir]


def launch_local(cfg: Config, run_dir: str) -> int:
    """Run all ranks under mpiexec; return the job's exit status (75 = checkpointed on a stop signal)."""
    cmd = mpiexec_command(cfg, run_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    hits = {"n": 0}

    def forward(num, frame):
        hits["n"] += 1
        if hits["n"] == 1:
            print(
                f"\n{signal.Signals(num).name}: asking the ranks to checkpoint and stop (again to kill)",
                file=sys.stderr,
            )
            _signal_group(proc, signal.SIGUSR2)
        else:
            _signal_group(proc, signal.SIGKILL)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    try:
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return code


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
