"""The README and the pages under ``docs/``: every relative link leads somewhere, and the
README stays short enough to read.

No database, no services: this reads Markdown files only.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest


def _root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "README.md").is_file() and (folder / "setup.py").is_file():
            return folder
    raise AssertionError("no project root above this test")


ROOT = _root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 250

#: ``[text](target)`` and ``![alt](target)``, with an optional "title".
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """Numbered lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def links(page: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every link in ``page`` outside code blocks and code spans."""
    return [
        (number, match.group(1))
        for number, line in _prose_lines(page.read_text(encoding="utf-8"))
        for match in _LINK.finditer(_CODE_SPAN.sub("``", line))
    ]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation (backticks included)
    dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings (a repeated heading gets ``-1``, ``-2``...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) is not None or target.startswith("//")


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with ``page``'s relative links, one line each (paths from ``root``)."""
    problems = []
    for number, target in links(page):
        if _external(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_readme_links_to_the_guides_and_the_reference() -> None:
    targets = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    expected = {
        "docs/tasks.md", "docs/control.md", "docs/chains-and-groups.md", "docs/beat.md",
        "docs/worker.md", "docs/testing.md", "docs/deploying.md", "docs/upgrading.md",
        "docs/reference/settings.md", "docs/reference/api.md", "docs/reference/endpoints.md",
        "docs/reference/commands.md", "docs/reference/checks.md", "docs/performance.md",
    }
    assert expected - targets == set()


# --- the checker itself: each of these would let a broken link through if it were wrong ---


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## The `tasks-beat/` endpoint\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/b.md) [ok](docs/b.md#the-tasks-beat-endpoint) [ok](#top-heading)\n"
        "# Top heading\n"
        "[gone](docs/missing.md) [bad anchor](docs/b.md#nowhere) "
        "![img](docs/none.png) [web](https://example.com/x.md)\n"
        "```\n[in code](docs/also-missing.md)\n```\n"
        "`[in a code span](docs/missing-too.md)`\n"
    )
    assert broken_links(page, tmp_path) == [
        "README.md:3: docs/missing.md: no such file",
        "README.md:3: docs/b.md#nowhere: no heading with anchor #nowhere",
        "README.md:3: docs/none.png: no such file",
    ]


def test_slugs_follow_github() -> None:
    assert slug("2. Delayed tasks") == "2-delayed-tasks"
    assert slug("Latest results: 2026-12-02 20:30") == "latest-results-2026-12-02-2030"
    assert slug("What \"exactly once\" means here") == "what-exactly-once-means-here"
    assert slug("Pull queues and `i3tasks_worker`") == "pull-queues-and-i3tasks_worker"
    assert slug("`tasks-beat/`") == "tasks-beat"
