"""Which MPI library mpi4py runs on, asked in a child Python without starting MPI, and a mixed build refused.

    lib = probe()              # MpiLibrary of this Python's mpi4py (sys.executable); UserError if it cannot load
    print(lib.line())          # "Open MPI v4.1.4 (/usr/lib/.../libmpi.so.40.30.4), mpi4py 4.1.2 (/venv/...)"
    lib.family                 # "openmpi", "mpich", "intel" or "other": what srun's PMI plugin and mpiexec must speak

`hpc-rlhf mpi` prints the line. The child imports mpi4py with `mpi4py.rc.initialize = False` (no MPI_Init, no
launcher needed) and reads MPI_Get_library_version and the libmpi files mapped into it (/proc/self/maps).

A mixed build: mpi4py compiled against one MPI that loads another's libmpi (e.g. built against Open MPI in a
Python whose lib/ holds the PyPI `mpich` wheel's libmpi.so, found first by the linker) fails to import with
`undefined symbol: ompi_mpi_logical8`, or maps two libmpi files; both are a one-line UserError naming the
rebuild.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from hpc_rlhf.errors import UserError

REBUILD = (
    "rebuild mpi4py against one MPI, in a venv that never held the `mpich` wheel: "
    "MPICC=$(command -v mpicc) pip install --no-binary mpi4py --no-cache-dir --force-reinstall --no-deps mpi4py"
)

_PROBE = r"""
import json, os, re, mpi4py
mpi4py.rc.initialize = False
mpi4py.rc.finalize = False
from mpi4py import MPI
libs = set()
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if re.match(r"libmpi(_abi)?\.so", os.path.basename(path)):
        libs.add(os.path.realpath(path))
print(json.dumps({"version": MPI.Get_library_version(), "libs": sorted(libs),
                  "mpi4py": mpi4py.__version__, "where": os.path.dirname(mpi4py.__file__)}))
"""


@dataclass(frozen=True)
class MpiLibrary:
    family: str
    """"openmpi", "mpich", "intel" or "other"."""
    version: str
    """MPI_Get_library_version, all of it (MPICH's holds its configure line)."""
    libs: tuple[str, ...]
    """The libmpi files the child mapped (real paths)."""
    mpi4py: str
    """mpi4py's version and directory."""

    @property
    def name(self) -> str:
        """The first line of the library's version text, e.g. "Open MPI v4.1.4, package: Debian OpenMPI, ..."."""
        first = self.version.strip().splitlines()[0] if self.version.strip() else "unknown MPI"
        return re.sub(r"\s+", " ", first.split(", package")[0].replace("Version:", "")).strip()

    def line(self) -> str:
        return f"{self.name} ({', '.join(self.libs) or 'libmpi not found in memory'}), mpi4py {self.mpi4py}"


def family_of(version: str) -> str:
    """The MPI family from MPI_Get_library_version's text."""
    if "Open MPI" in version:
        return "openmpi"
    if "Intel(R) MPI" in version:
        return "intel"
    if "MPICH" in version:
        return "mpich"
    return "other"


def probe(python: str | None = None, timeout: float = 120) -> MpiLibrary:
    """The MPI library of `python`'s mpi4py (default: this Python). UserError (one line) when mpi4py does not
    load, or loads two MPI libraries."""
    python = python or sys.executable
    try:
        r = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot ask {python} which MPI mpi4py runs on: {e}") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit {r.returncode}"
        if "undefined symbol" in last:
            raise UserError(f"mpi4py of {python} loads an MPI library it was not built against ({last}); {REBUILD}")
        raise UserError(
            f"mpi4py of {python} does not load ({last}); if it loads another MPI than it was built for, {REBUILD}"
        )
    info = json.loads(r.stdout.strip().splitlines()[-1])
    libs = tuple(info["libs"])
    if len({_soname_major(p) for p in libs if os.path.basename(p).startswith("libmpi.so")}) > 1:
        raise UserError(f"mpi4py of {python} maps two MPI libraries ({', '.join(libs)}): a mixed build; {REBUILD}")
    where = f"{info['mpi4py']} ({info['where']})"
    return MpiLibrary(family_of(info["version"]), info["version"], libs, where)


def _soname_major(path: str) -> str:
    """ ".12" of libmpi.so.12.1.0, ".40" of libmpi.so.40.30.4: the ABI a file belongs to."""
    m = re.search(r"\.so\.(\d+)", path)
    return f".{m.group(1)}" if m else ""


def launcher_flavor(mpiexec: str) -> str:
    """ "openmpi", "mpich" (hydra) or "other": what `mpiexec --version` says it is."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "other"
    text = out.stdout + out.stderr
    if "Open MPI" in text or "OpenRTE" in text or "Open RTE" in text:
        return "openmpi"
    if "HYDRA" in text:
        return "mpich"
    return "other"
