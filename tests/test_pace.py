"""How the suite keeps its pace (docs/testing.md): every run prints its slowest tests, and the scheduler's file groups
and longest-first list name files that exist (a renamed file would silently fall out of its group).
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

from tests.conftest import GROUP_OF, LONGEST_FIRST, SHARED_FILES

ROOT = Path(__file__).resolve().parents[1]


def test_every_run_prints_its_20_slowest_tests():
    opts = shlex.split(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"])
    assert "--durations=20" in opts
    assert opts[opts.index("--dist") + 1] == "loadscope"  # the file scheduler in tests/conftest.py is loadscope's


def test_scheduler_groups_and_longest_first_name_real_files():
    for group, paths in SHARED_FILES.items():
        missing = [p for p in paths if not (ROOT / p).is_file()]
        assert not missing, f"group {group!r} in tests/conftest.py names files that do not exist: {missing}"
    assert len(GROUP_OF) == sum(len(p) for p in SHARED_FILES.values()), "a file is in two groups"
    unknown = [s for s in LONGEST_FIRST if s not in SHARED_FILES and not (ROOT / s).is_file()]
    assert not unknown, f"LONGEST_FIRST in tests/conftest.py names neither a group nor a file: {unknown}"
    grouped_longest = [s for s in LONGEST_FIRST if s in GROUP_OF]
    assert not grouped_longest, f"name the group, not its file, in LONGEST_FIRST: {grouped_longest}"
