"""The site's MPI as the launchers see it: the srun PMI plugin of a Slurm job (`slurm.mpi_plugin`, default
`auto`) and the flags of a local mpiexec (`runtime.mpiexec`), both chosen from the MPI library mpi4py runs on.

    plugin = resolve_plugin(cfg.slurm.mpi_plugin)     # "pmi2" / "pmix" / ...; ConfigError (one line) on a mismatch
    args = mpiexec_args("/usr/bin/mpiexec")           # ["--oversubscribe", "--allow-run-as-root"] for Open MPI as root
    python -m hpc_rlhf.launch.site_mpi                # prints the plugin `auto` picks here (jobs/ppo.sbatch uses it)

PMI plugins. The PyPI MPICH (and an MPICH built without PMIx) wires up only through `pmi2`; Open MPI (Debian's
4.1, and every Open MPI 5) only through `pmix`: under another plugin each task starts as an MPI world of one, or
waits in MPI start-up until runtime.start_timeout_s. `auto` takes the first plugin the library speaks that
`srun --mpi=list` offers; an explicit plugin srun lacks, or one the library cannot speak, is refused at submit
(with `--dry-run` too). Where srun is not installed (a dry run on a laptop) the list is not checked.

Local launchers. MPICH's hydra runs more ranks than cores and runs as root without a word; Open MPI's mpiexec
refuses both unless told (`--oversubscribe`, `--allow-run-as-root`): a 3-rank demo on a 2-core machine, or a
container running as root. An mpiexec of one MPI with mpi4py on another starts every rank as a world of one:
refused before the run starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from hpc_rlhf.cluster.mpi_lib import MpiLibrary, launcher_flavor, probe
from hpc_rlhf.errors import ConfigError, UserError

NAMES = {"openmpi": "Open MPI", "mpich": "MPICH", "intel": "Intel MPI", "other": "another MPI"}


def _base(plugin: str) -> str:
    return "pmix" if plugin.startswith("pmix") else plugin


def speaks(lib: MpiLibrary) -> tuple[str, ...] | None:
    """The srun plugins `lib` wires up through, preferred first; None when unknown (any is let through)."""
    if lib.family == "openmpi":
        return ("pmix",)
    if lib.family == "mpich":  # its configure line names PMIx when it was built with it
        return ("pmi2", "pmix") if "pmix" in lib.version.lower() else ("pmi2",)
    if lib.family == "intel":
        return ("pmi2", "pmix")
    return None


def srun_mpi_list() -> list[str] | None:
    """The plugins `srun --mpi=list` offers (pmix_v4 and the like included), None without srun."""
    if shutil.which("srun") is None:
        return None
    try:
        r = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = r.stdout + r.stderr
    out = [ln.strip() for ln in text.splitlines() if ln[:1] in ("\t", " ") and ln.strip()]
    for m in re.finditer(r"versions available:\s*(.+)", text):
        out += [p.strip() for p in m.group(1).split(",") if p.strip()]
    out = [re.sub(r"^(srun: )?(mpi/)?", "", p) for p in out]
    return out


def choose_plugin(requested: str, lib: MpiLibrary, listed: list[str] | None) -> str:
    """The plugin for `srun --mpi=`; ConfigError (one line) when `requested` cannot work. Pure."""
    wants = speaks(lib)
    offered = ", ".join(listed) if listed else ""
    if requested == "auto":
        for plugin in wants or ("pmix", "pmi2"):
            if listed is None or plugin in listed:
                return plugin
        if wants is None:
            return "pmi2" if listed is None else listed[0]
        raise ConfigError(
            f"slurm.mpi_plugin=auto: mpi4py runs on {lib.name}, which needs srun --mpi={' or '.join(wants)}, but "
            f"srun --mpi=list offers {offered}: ask the site for that plugin (Debian: slurm-wlm-basic-plugins and "
            f"libpmix-dev for pmix), or build mpi4py against an MPI the site's srun wires up (README: site MPI)"
        )
    if requested == "none":
        raise ConfigError("slurm.mpi_plugin=none gives MPI no wire-up (every task a world of one): use auto")
    if listed is not None and requested not in listed:
        raise ConfigError(
            f"slurm.mpi_plugin={requested}: srun --mpi=list offers only {offered}; use auto or one of them"
        )
    if wants is not None and _base(requested) not in wants:
        raise ConfigError(
            f"slurm.mpi_plugin={requested} cannot wire up {lib.name} (the MPI mpi4py runs on), which needs "
            f"srun --mpi={' or '.join(wants)}: use slurm.mpi_plugin=auto"
        )
    return requested


def resolve_plugin(requested: str, python: str | None = None) -> str:
    """`choose_plugin` with this machine's srun and mpi4py (of `python`, default this one)."""
    return choose_plugin(requested, probe(python), srun_mpi_list())


def mpiexec_args(exe: str, python: str | None = None) -> list[str]:
    """Flags a local `exe` (mpiexec) needs for this run; UserError when its MPI is not mpi4py's."""
    flavor = launcher_flavor(exe)
    lib = probe(python)
    family = "mpich" if lib.family == "intel" else lib.family
    if "other" not in (flavor, family) and flavor != family:
        raise UserError(
            f"runtime.mpiexec {exe} is {NAMES[flavor]}'s launcher but mpi4py runs on {lib.name}: every rank would "
            f"start as an MPI world of one; point runtime.mpiexec at the mpiexec of {NAMES[family]}"
        )
    if flavor != "openmpi":
        return []
    args = ["--oversubscribe"]  # MPICH's default: more ranks than cores (3 roles on a 2-core machine)
    if os.geteuid() == 0:
        args.append("--allow-run-as-root")  # containers run as root; Open MPI refuses it unless told
    return args


def report(mpiexec: str = "mpiexec") -> str:
    """`hpc-rlhf mpi`: the MPI library mpi4py runs on, the local launcher and the srun plugin `auto` picks."""
    lib = probe()
    lines = [f"MPI library: {lib.line()}"]
    exe = shutil.which(mpiexec)
    if exe is None:
        lines.append(f"local launcher: {mpiexec} not found on PATH (runtime.mpiexec)")
    else:
        try:
            flags = " ".join(mpiexec_args(exe))
            lines.append(f"local launcher: {exe} ({NAMES[launcher_flavor(exe)]}){' ' + flags if flags else ''}")
        except UserError as e:
            lines.append(f"local launcher: {e}")
    listed = srun_mpi_list()
    if listed is None:
        lines.append("Slurm: srun not found")
    else:
        try:
            lines.append(
                f"Slurm: srun --mpi={choose_plugin('auto', lib, listed)} (srun --mpi=list: {', '.join(listed)})"
            )
        except UserError as e:
            lines.append(f"Slurm: {e}")
    return "\n".join(lines)


def add_subparser(sub) -> None:
    """`hpc-rlhf mpi [--mpiexec EXE]` in the CLI."""
    p = sub.add_parser("mpi", help="which MPI library mpi4py runs on, its local launcher and srun plugin")
    p.add_argument("--mpiexec", default="mpiexec", help="the local launcher to check (runtime.mpiexec)")
    p.set_defaults(func=lambda args: print(report(args.mpiexec)))


def main() -> int:
    """Print the plugin `slurm.mpi_plugin=auto` picks here (argv[1]: another plugin to check instead)."""
    try:
        print(resolve_plugin(sys.argv[1] if len(sys.argv) > 1 else "auto"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
