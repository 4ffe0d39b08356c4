"""`hpc-rlhf submit --dry-run`: the sbatch script submitit would write, checked against golden files.

No Slurm needed. The run dir and the Python executable are replaced by RUN_DIR and PYTHON so the golden
files are stable; regenerate them with UPDATE_GOLDEN=1 pytest tests/launch/test_dry_run.py.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from pathlib import Path

import pytest

from hpc_rlhf.config import load_config
from hpc_rlhf.errors import ConfigError
from hpc_rlhf.launch import slurm_submit
from hpc_rlhf.launch.cli import build_parser
from tests.conftest import TINY

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "default": [],
    "full": [
        "layout.generate=2",
        "layout.score=1",
        "layout.train=3",
        "slurm.nodes=2",
        "slurm.tasks_per_node=3",
        "slurm.cpus_per_task=4",
        "slurm.gpus_per_node=2",
        "slurm.mem_gb=64",
        "slurm.timeout_min=240",
        "slurm.partition=gpu",
        "slurm.account=proj42",
        "slurm.qos=normal",
        "slurm.constraint=a100",
        "slurm.mail_user=me@example.org",
        "slurm.mail_type=END,FAIL",
        "slurm.signal_delay_s=120",
        "slurm.max_requeues=5",
        "slurm.setup=['module load cuda','source /opt/venv/bin/activate']",
        "slurm.extra_sbatch=[--exclusive,'#SBATCH --reservation=big']",
        "slurm.snapshot_code=false",
        "ppo.minibatch_size=12",
        "generate.prompts_per_step=36",
        "generate.shards_per_step=6",
    ],
}


def _normalise(text: str, run_dir: Path) -> str:
    text = text.replace(str(run_dir), "RUN_DIR")
    return text.replace(shlex.quote(sys.executable), "PYTHON")


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_script_matches_golden(case, tmp_path):
    run_dir = tmp_path / "runs" / "exp"
    cfg = load_config(None, [f"run_dir={run_dir}", *CASES[case]])
    out = io.StringIO()
    info = slurm_submit.submit(cfg, None, dry_run=True, out=out)
    assert info.job_id is None and info.dry_run
    assert not run_dir.exists(), "a dry run must not create the run dir"
    got = _normalise(out.getvalue(), run_dir)
    golden = GOLDEN / f"dry_run_{case}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"dry-run script changed; if intended: UPDATE_GOLDEN=1 pytest {__file__}"


def test_dry_run_script_has_the_contract():
    """What the requeue design relies on, independent of the golden file's details."""
    cfg = load_config(None, ["run_dir=/x/run"])
    script = slurm_submit.render_sbatch(cfg, Path("/x/run"))
    assert "#SBATCH --signal=USR2@90" in script  # no B: -> every task gets it
    assert "#SBATCH --requeue" in script
    assert "#SBATCH --open-mode=append" in script
    assert "#SBATCH --ntasks-per-node=3" in script and "#SBATCH --nodes=1" in script
    assert "--mpi=pmi2" in script and "--kill-on-bad-exit=0" in script
    assert "/dev/shm/mpich_shm_" in script.split("# command")[0], "shm cleanup must run before srun"
    assert "export PYTHONPATH=/x/run/code" in script
    assert script.rstrip().endswith("exit $hpc_rlhf_rc"), "the job must end with srun's status"


@pytest.mark.parametrize(
    "overrides, numbers",
    [
        (["slurm.tasks_per_node=2"], ("2", "3")),  # 1 node * 2 tasks != world 1+1+1
        (["slurm.nodes=2", "slurm.tasks_per_node=2"], ("4", "3")),
        (["slurm.nodes=2"], ("3", "slurm.nodes=2")),  # world 3 does not split over 2 nodes
        (["layout.train=2", "ppo.minibatch_size=16", "slurm.tasks_per_node=3"], ("3", "4")),
    ],
)
def test_bad_task_count_refused_at_load(overrides, numbers, tmp_path):
    """A Slurm shape that does not match the layout fails when the config is loaded (one line, with the
    numbers), so neither a submission nor a local run starts from it."""
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"run_dir={run_dir}", *overrides])
    msg = str(e.value)
    assert "\n" not in msg
    for n in numbers:
        assert n in msg, msg
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["slurm.nodes=0"], "slurm.nodes"),
        (["slurm.tasks_per_node=-1"], "slurm.tasks_per_node"),
        (["slurm.extra_sbatch=[-C,gpu]"], "slurm.extra_sbatch"),
        (["slurm.extra_sbatch=['--reservation big']"], "slurm.extra_sbatch"),
        (["slurm.signal_delay_s=600", "slurm.timeout_min=5"], "slurm.signal_delay_s"),
        (["slurm.mpi_plugin=''"], "slurm.mpi_plugin"),
        (["slurm.mpi_plugin='pmi 2'"], "slurm.mpi_plugin"),
        (["slurm.cpus_per_task=0"], "slurm.cpus_per_task"),
        (["slurm.timeout_min=0"], "slurm.timeout_min"),
        (["slurm.max_requeues=-1"], "slurm.max_requeues"),
    ],
)
def test_bad_slurm_values_refused_at_load(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert str(e.value).startswith(f"config key '{key}': ") and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "overrides, shape",
    [
        ([], (1, 3)),
        (["slurm.tasks_per_node=3"], (1, 3)),
        (
            ["layout.generate=2", "layout.score=2", "layout.train=2", "generate.shards_per_step=2", "slurm.nodes=2"],
            (2, 3),
        ),
        (
            ["layout.generate=3", "layout.score=2", "layout.train=1", "slurm.nodes=3", "generate.shards_per_step=3"],
            (3, 2),
        ),
    ],
)
def test_slurm_shape_of_a_valid_config(overrides, shape):
    assert slurm_submit.slurm_shape(load_config(None, overrides)) == shape


def test_extra_sbatch_options_reach_the_script():
    cfg = load_config(None, ["slurm.extra_sbatch=[--exclusive,'#SBATCH --reservation=big', ' --comment=a b ']"])
    extra = slurm_submit.executor_parameters(cfg, Path("/x/run"))["slurm_additional_parameters"]
    assert extra == {"requeue": True, "exclusive": True, "reservation": "big", "comment": "a b"}


TWO_NODES = ["slurm.nodes=2", "layout.train=2", "generate.shards_per_step=4"]  # ranks 0-1 on node 0, 2-3 on 1


@pytest.mark.parametrize(
    "placement, error",
    [
        (["placement.generate=1", "placement.train=0"], None),
        (["placement.generate=0", "placement.score=0", "placement.train=0"], "the train group does not fit"),
        (["placement.train=1", "placement.generate=1"], "the train group does not fit"),
        (["placement.train=2"], "'placement.train': names node 2 but the job has slurm.nodes=2"),
        (["placement.score=a"], "'placement.score': 'a' is not 'any' or distinct node indices"),
    ],
)
def test_dry_run_refuses_a_placement_the_allocation_cannot_meet(placement, error, tmp_path):
    def dry_run():
        cfg = load_config(TINY, [f"run_dir={tmp_path / 'r'}", *TWO_NODES, *placement])
        return slurm_submit.submit(cfg, dry_run=True, out=io.StringIO())

    if error is None:
        assert dry_run().num_tasks == 4
        return
    with pytest.raises(ConfigError) as e:
        dry_run()
    assert error in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()


def test_cli_submit_dry_run(tmp_path, capsys):
    ap = build_parser()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"run_dir: {tmp_path / 'r'}\ntotal_steps: 7\n")
    args = ap.parse_args(["submit", str(cfg_file), "slurm.partition=high", "--dry-run"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --partition=high" in out and "nothing submitted" in out
    assert not (tmp_path / "r").exists()
    for argv in (["status", "R"], ["cancel", "R"], ["logs", "R", "--rank", "2"]):
        args = ap.parse_args(argv)
        assert callable(args.func) and args.run_dir == "R"
    assert ap.parse_args(["logs", "R", "--rank", "2"]).rank == 2


def test_sbatch_refusal_is_one_line_naming_sbatchs_error():
    import subprocess

    err = b"sbatch: warning: something\nsbatch: error: invalid partition specified: nope\n"
    e = subprocess.CalledProcessError(1, ["sbatch"], stderr=err)
    assert slurm_submit._sbatch_error(e) == "sbatch: error: invalid partition specified: nope"
    assert slurm_submit._sbatch_error(RuntimeError("line one\nline two")) == "line two"
    assert slurm_submit._sbatch_error(RuntimeError()) == "RuntimeError"
