"""tools/code_stats.py: no import circle in the package (lazy imports inside functions count), and the scan
itself sees circles, long functions and their `# long:` reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import code_stats  # noqa: E402


def test_the_package_has_no_import_cycle():
    found = code_stats.stats(REPO)["cycle_list"]
    assert not found, "import circles (tools/code_stats.py):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_scan_sees_cycles_long_functions_and_their_reasons(tmp_path):
    pkg = tmp_path / "hpc_rlhf"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from hpc_rlhf.a import y\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from .z import g\n")  # lazy and relative
    body = "".join(f"    v{i} = {i}\n" for i in range(61))
    (pkg / "a" / "z.py").write_text(
        f"import hpc_rlhf.a.x\n\n\ndef long():\n{body}\n\n# long: a table of values\n@staticmethod\ndef ok():\n{body}"
    )
    (pkg / "b.py").write_text("from hpc_rlhf.a import y\n" + "\n" * 400)  # one-way: no circle
    got = code_stats.stats(str(tmp_path))
    assert got["cycle_list"] == [["hpc_rlhf.a.x", "hpc_rlhf.a.y", "hpc_rlhf.a.z"]]
    assert [f["function"] for f in got["long_function_list"]] == ["hpc_rlhf/a/z.py:4 long"]
    assert got["files_over_400"] == 1 and got["files"] == 6


def test_the_script_prints_json():
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "code_stats.py")], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["files"] > 50 and got["lines"] > 1000 and got["import_cycles"] == len(got["cycle_list"])
