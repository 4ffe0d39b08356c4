"""Size and shape of the package, from its source alone (an AST scan; nothing is imported), as JSON.

    python tools/code_stats.py                 # this checkout's hpc_rlhf/
    python tools/code_stats.py --root DIR      # another checkout (e.g. a `git worktree` of an older commit)

Prints {"files", "lines", "files_over_400", "long_functions", "import_cycles", ...}:
- files, lines: the .py files of hpc_rlhf/ and their lines;
- files_over_400: those with more than 400 lines;
- long_functions: functions (and methods) over 60 lines with no reason given. The reason is one comment
  line right above the `def` (above its decorators, if any) that starts with `# long:`, e.g.
  `# long: one pass over the step's phases; each is a call`;
- import_cycles: the circles among the package's modules, counting imports inside functions too (a lazy
  import is still a circle in the design): each strongly connected component of the import graph with more
  than one module, listed by its members. `from hpc_rlhf.a import b` is an edge to module `a.b` when that is a
  module, else to `a`.
tests/test_code_stats.py asserts that there is no import cycle.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = "# long:"


def modules(root: str) -> dict[str, str]:
    """{dotted module name: path} of every .py file under ROOT/hpc_rlhf."""
    out = {}
    for d, dirs, files in os.walk(os.path.join(root, "hpc_rlhf")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source (lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("hpc_rlhf"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: against this module's package
                base = module if is_package else module.rsplit(".", 1)[0]
                if node.level > 1:
                    base = base.rsplit(".", node.level - 1)[0]
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if not name.startswith("hpc_rlhf"):
                continue
            for a in node.names:
                out.add(f"{name}.{a.name}" if f"{name}.{a.name}" in known else name)
    return {m for m in out if m in known and m != module}


def long_functions(tree: ast.AST, lines: list[str], path: str) -> list[dict]:
    """Functions over MAX_FUNCTION_LINES lines without a `# long:` comment line right above them."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        n = node.end_lineno - node.lineno + 1
        if n <= MAX_FUNCTION_LINES:
            continue
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[top - 2].strip() if top >= 2 else ""
        if not above.startswith(REASON):
            out.append({"function": f"{path}:{node.lineno} {node.name}", "lines": n})
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def stats(root: str) -> dict:
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {}
    files, total, big, long = 0, 0, [], []
    for name, path in mods.items():
        text = open(path).read()
        lines = text.splitlines()
        tree = ast.parse(text)
        rel = os.path.relpath(path, root)
        files += 1
        total += len(lines)
        if len(lines) > MAX_FILE_LINES:
            big.append({"file": rel, "lines": len(lines)})
        long += long_functions(tree, lines, rel)
        graph[name] = imports(tree, name, path.endswith("__init__.py"), known)
    found = cycles(graph)
    return {
        "files": files,
        "lines": total,
        "files_over_400": len(big),
        "long_functions": len(long),
        "import_cycles": len(found),
        "big_files": big,
        "long_function_list": sorted(long, key=lambda x: -x["lines"]),
        "cycle_list": found,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args(argv)
    json.dump(stats(args.root), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
