"""The `slurm:` checks of a config (config/checks.py runs them in `validate`): every value, checked at load time for
every run (a local run can be submitted later); the submitting side (hpc_rlhf.launch.slurm_submit) relies on them
and does not repeat them.
"""

from __future__ import annotations

from hpc_rlhf.config.schema import Config
from hpc_rlhf.errors import check_key as _check


def validate_slurm(cfg: Config) -> None:
    """The Slurm shape against the layout (one MPI rank per Slurm task) and the `slurm:` values."""
    s, world, lay = cfg.slurm, cfg.world_size, cfg.layout
    _check(s.nodes >= 1, "slurm.nodes", f"must be >= 1 (got {s.nodes})")
    _check(
        s.tasks_per_node >= 0,
        "slurm.tasks_per_node",
        f"must be >= 0 (0 = world / nodes), got {s.tasks_per_node}",
    )
    tpn = s.tasks_per_node
    if tpn == 0:
        _check(
            world % s.nodes == 0,
            "slurm.nodes",
            f"layout world size {world} does not divide over slurm.nodes={s.nodes}; "
            "set slurm.tasks_per_node or change the layout",
        )
        tpn = world // s.nodes
    _check(
        s.nodes * tpn == world,
        "slurm.tasks_per_node",
        f"Slurm tasks slurm.nodes*slurm.tasks_per_node = {s.nodes}*{tpn} = {s.nodes * tpn} != layout world size "
        f"{world} (layout.generate+score+train = {lay.generate}+{lay.score}+{lay.train}); one MPI rank per Slurm task",
    )
    for key, value, low in (
        ("cpus_per_task", s.cpus_per_task, 1),
        ("timeout_min", s.timeout_min, 1),
        ("gpus_per_node", s.gpus_per_node, 0),
        ("mem_gb", s.mem_gb, 0),
        ("max_requeues", s.max_requeues, 0),
        ("signal_delay_s", s.signal_delay_s, 0),
    ):
        _check(value >= low, f"slurm.{key}", f"must be >= {low} (got {value})")
    _check(
        s.signal_delay_s < s.timeout_min * 60,
        "slurm.signal_delay_s",
        f"{s.signal_delay_s} s must be shorter than slurm.timeout_min={s.timeout_min} min",
    )
    _check(
        bool(s.mpi_plugin) and not any(c.isspace() for c in s.mpi_plugin),
        "slurm.mpi_plugin",
        f"'{s.mpi_plugin}' is not an srun --mpi plugin (e.g. pmi2)",
    )
    for opt in s.extra_sbatch:
        _check(
            _is_long_sbatch_option(opt),
            "slurm.extra_sbatch",
            f"'{opt}' is not a long sbatch option such as --exclusive or --reservation=NAME",
        )


def _is_long_sbatch_option(opt: str) -> bool:
    """`--key` or `--key=value`, optionally after `#SBATCH` (what slurm_submit passes on to sbatch)."""
    s = opt.strip()
    if s.startswith("#SBATCH"):
        s = s[len("#SBATCH") :].strip()
    return s.startswith("--") and len(s) >= 3 and " " not in s.split("=", 1)[0]
