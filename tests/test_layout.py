"""The source tree explains itself: no two modules of the project's packages share a file name, a module over
400 lines says in its docstring why it is not split, no modules import each other round a circle, and no line of a
tracked Python file is wider than 120 columns.

Two ``mlflow_mirror.py`` (one the MLflow client, one the pure mapping) or two ``serve.py`` make a traceback, a
grep or an editor tab say the wrong thing; a module whose name another module already has is renamed to say
which one it is (the CLI's command modules end in ``_cmd`` where a library module has the command's name).
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "registry", "deployments")
#: Names every package may have: they are the package itself or its tooling, never a module one imports by name.
SHARED_NAMES = {"__init__.py", "conftest.py", "__main__.py"}


def module_paths() -> list[Path]:
    """Every ``.py`` file of the project's source packages (tests excluded), sorted."""
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_packages_hold_modules():
    assert len(module_paths()) > 50  # the walk found the tree, so the next test checks something


def test_no_two_modules_share_a_name():
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in module_paths():
        if path.name not in SHARED_NAMES:
            by_name[path.name].append(str(path.relative_to(ROOT)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"modules that share a name (rename one so the name says which it is): {shared}"


#: Modules over the limit that another change is splitting now (no reason line asked of them meanwhile).
BEING_SPLIT = {"flows/refine_adapter.py"}
MAX_LINES = 400
REASON = "Over 400 lines:"


def test_a_long_module_says_why_it_is_not_split():
    import ast

    silent = []
    for path in module_paths():
        rel = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if rel in BEING_SPLIT or text.count("\n") <= MAX_LINES:
            continue
        if REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            silent.append(f"{rel} ({text.count(chr(10))} lines)")
    assert not silent, f"split these or add a line '{REASON} <why>' to their module docstring: {silent}"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, at any depth of its code (module level, functions, TYPE_CHECKING):
    names resolved under the ``spectral_surgery`` namespace, a ``from package import module`` as that module."""
    import ast

    mods = {}
    for path in module_paths():
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(["spectral_surgery", *(parts[:-1] if is_pkg else parts)])] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        pkg = mod if is_pkg else mod.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    out.add(n)
        graph[mod] = out
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """No two of the project's modules import each other, directly or round a circle, even lazily inside a function:
    each such import is a hidden order of initialisation (the shared tools/import_cycles.py counts the same, but it
    knows the folders' bare names, not the installed ``spectral_surgery.*`` ones this tree imports by)."""
    graph = _import_graph()
    assert sum(map(len, graph.values())) > 300  # the imports resolved: the graph has its edges
    assert not _cycles(graph), _cycles(graph)


MAX_COLUMNS = 120


def tracked_python_files() -> list[Path]:
    """Every ``.py`` file git tracks (the tree's own ``.py`` files outside hidden and cache folders where git or the
    repository is missing, e.g. an unpacked source archive)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "*.py"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in ROOT.rglob("*.py") if not any(part.startswith(".") or part == "__pycache__"
                                                               for part in p.relative_to(ROOT).parts))


def test_no_line_is_wider_than_120_columns():
    files = [p for p in tracked_python_files() if p.is_file()]
    assert len(files) > 100  # the listing found the tree, so the check below checks something
    wide = [f"{p.relative_to(ROOT)}:{i} ({len(line)} columns)" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_COLUMNS]
    assert not wide, f"lines over {MAX_COLUMNS} columns (wrap them; a data table: wrap the literal): {wide}"
