"""The install claims one import name, ``spectral_surgery``: the repository's folders are its sub-packages.

``pip install`` maps ``flows/`` to ``spectral_surgery.flows``, ``tasks/`` to ``spectral_surgery.tasks`` and so on
(``[tool.setuptools]`` in pyproject.toml), so a user's own ``tasks/`` or ``flows/`` package (common in ML
repositories) is theirs: ``import tasks`` never finds ours, and ours never finds theirs.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("flows", "tasks", "registry", "deployments")
#: an import statement at the start of a line or after ``;`` inside a string (the code of ``python -c``)
CODE_IMPORT = re.compile(r"(?:^|;|\n)[ \t]*(?:from|import) (?:flows|tasks|registry|deployments)\b[^;\n]*")


def _package_folders() -> set[str]:
    return {"spectral_surgery." + ".".join(init.parent.relative_to(ROOT).parts)
            for top in FOLDERS for init in (ROOT / top).rglob("__init__.py") if "__pycache__" not in init.parts}


def test_pyproject_installs_every_package_folder_under_the_namespace():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {f"spectral_surgery.{top}": top for top in FOLDERS}
    listed = set(tool["packages"])
    missing, extra = _package_folders() - listed, listed - _package_folders()
    assert not missing, f"add these package folders to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert not extra, f"pyproject.toml lists packages that have no folder with an __init__.py: {sorted(extra)}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"spectral-surgery": "spectral_surgery.flows.cli:main"}


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        out += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in FOLDERS]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):  # code in a string: python -c "..."
            out += [
                f"{path.relative_to(ROOT)}:{node.lineno} {m.group(0).strip()}" for m in CODE_IMPORT.finditer(node.value)
            ]
    return out


def test_no_module_imports_a_bare_folder_name():
    """Code and tests import ``spectral_surgery.tasks...``: a bare ``tasks...`` would load a second copy of a module
    (two policy registries, two caches) in a checkout, and nothing at all in an install."""
    files = [p for top in (*FOLDERS, "tests") for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 100
    bare = [hit for p in files if p != Path(__file__).resolve() for hit in _bare_imports(p)]  # (a user's, below)
    assert not bare, f"import these through spectral_surgery (e.g. spectral_surgery.tasks.keys): {bare}"


@pytest.mark.slow
def test_a_users_own_tasks_and_flows_packages_stay_theirs(tmp_path):
    """In a user's project with its own ``tasks/`` and ``flows/``: theirs import as theirs, every module of ours
    imports under ``spectral_surgery`` beside them, and no bare name of ours enters ``sys.modules``."""
    for name in ("tasks", "flows"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'user {name}'\n")
    script = """
import importlib, pkgutil, sys
import tasks, flows
assert (tasks.OWNER, flows.OWNER) == ('user tasks', 'user flows'), (tasks, flows)
try:
    import registry
except ModuleNotFoundError:
    pass
else:
    raise AssertionError(f"`import registry` found {registry.__file__}")
failed, names = [], []
for top in ('flows', 'tasks', 'registry', 'deployments'):
    pkg = importlib.import_module('spectral_surgery.' + top)  # a namespace's own __path__ is not walkable in an
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]  # editable install
for name in names:
    if ".migrations." in name or name.endswith(".__main__"):
        continue  # Alembic runs env.py and the revisions itself; a __main__ runs the command
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != 'vllm':  # the optional vLLM backend needs vllm installed
            failed.append(f"{name}: {e!r}")
    except Exception as e:  # noqa: BLE001 - reported below
        failed.append(f"{name}: {e!r}")
assert not failed, failed
assert (tasks.OWNER, flows.OWNER) == ('user tasks', 'user flows')
ours = sorted(n for n in sys.modules if n.split('.')[0] in ('tasks', 'flows', 'registry', 'deployments')
              and n not in ('tasks', 'flows'))
assert not ours, ours
assert sys.modules['tasks'].__file__.startswith(sys.argv[1])
print(len([n for n in sys.modules if n.startswith('spectral_surgery.')]))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert int(p.stdout.split()[-1]) > 100  # the walk imported the whole tree
