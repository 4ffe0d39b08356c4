"""The layering of docs/architecture.md, checked on every import in hpc_rlhf/ (lazy ones inside functions too):
lower layers never import higher ones, and a role never imports another role."""

from __future__ import annotations

import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "hpc_rlhf")

BASE = {"errors", "rundir"}
L1 = BASE | {"algo", "config", "plugins", "data"}
L2 = L1 | {"rollout", "models"}
# top-level unit (a package folder, or a module at the top) -> units it may import
ALLOWED = {
    "errors": set(),
    "rundir": set(),
    "algo": set(),
    "config": BASE | {"plugins"},
    "plugins": BASE | {"algo"},  # algo.name as `module:function`: the registered estimator it names
    "data": BASE | {"config"},
    "rollout": L1,
    "models": L1,
    "demo": L1 | {"models"},
    "runtime": BASE,
    "checkpoint": L2,
    "cluster": L2,
    "parallel": L2 | {"cluster"},
    "weights": L2 | {"checkpoint", "parallel"},
    "archive": L1 | {"rollout"},
    "monitor": L1 | {"checkpoint"},
    "rewards": L2,
    "generation": L2 | {"checkpoint", "parallel", "weights"},
    "roles": L2 | {"checkpoint", "cluster", "parallel", "weights", "runtime", "rewards", "generation"},
}
ALLOWED["stages"] = set(ALLOWED)  # every unit below launch: launch runs the stages, never the other way
# roles/: the modules of each role; modules of roles/ not listed here are shared helpers of the roles
ROLES = {
    "generate": {"generator"},
    "score": {"scorer"},
    "train": {"trainer", "trainer_algo", "trainer_context", "trainer_loop", "trainer_step"},
}


def _unit(module: str) -> str:
    """'hpc_rlhf.rollout.shard' -> 'rollout'."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _imports(path: str, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(open(path).read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("hpc_rlhf.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name == "hpc_rlhf":  # `from hpc_rlhf import rundir`
                out += [(node.lineno, f"hpc_rlhf.{a.name}") for a in node.names]
            elif name.startswith("hpc_rlhf."):
                out.append((node.lineno, name))
    return out


def _modules():
    for d, _dirs, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
                yield path, rel.removesuffix(".__init__")


def _role_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 3 and parts[1] == "roles":
        return next((r for r, mods in ROLES.items() if parts[2] in mods), None)
    return None


def violations() -> list[str]:
    out = []
    for path, module in _modules():
        unit = _unit(module)
        for line, target in _imports(path, module):
            tunit = _unit(target)
            where = f"{os.path.relpath(path, REPO)}:{line} imports {target}"
            if unit in ALLOWED and tunit != unit and tunit not in ALLOWED[unit]:
                out.append(f"{where}: `{unit}` may import only {sorted(ALLOWED[unit]) or 'nothing of the package'}")
            mine, theirs = _role_of(module), _role_of(target)
            if mine and theirs and mine != theirs:
                out.append(f"{where}: a role never imports another role")
    return out


def test_every_unit_of_the_package_has_a_rule():
    units = {_unit(m) for _, m in _modules()} - {"", "__init__", "__main__"}
    assert units - set(ALLOWED) == {"launch"}  # the top: it may import anything


def test_layers_and_roles_are_kept():
    found = violations()
    assert not found, "imports against docs/architecture.md:\n" + "\n".join(found)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    bad = tmp_path / "hpc_rlhf" / "algo"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    from hpc_rlhf.config import Config\n")
    (tmp_path / "hpc_rlhf" / "roles").mkdir()
    (tmp_path / "hpc_rlhf" / "roles" / "scorer.py").write_text("from hpc_rlhf.roles.trainer import Trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(tmp_path / "hpc_rlhf"))
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    found = violations()
    assert any("algo/x.py:2 imports hpc_rlhf.config" in v for v in found)
    assert any(
        "roles/scorer.py:1 imports hpc_rlhf.roles.trainer: a role never imports another role" in v for v in found
    )
