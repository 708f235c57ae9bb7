"""The docs stay honest: every `modelplane ...` command they show exists, every relative link resolves.

Cheap checks that catch the usual drift: a command renamed in the CLI but not in the docs, a page
moved without its links. Commands are read from code (inline code spans and fenced blocks), where
readers copy them from; the CLI is the typer app itself, walked through its command groups (typer
ships its own copy of click, so a group is recognised by its ``commands`` mapping).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from modelplane.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```.*?$(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# `modelplane` as a command word (not `./.modelplane`, `charts/modelplane`, `modelplane.io`).
INVOCATION = re.compile(r"(?<![\w./-])modelplane((?:[ \t]+[^\s`|;&)]+)*)")
WORD = re.compile(r"^[a-z][a-z0-9-]*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def code_regions(text: str) -> list[str]:
    """The text of fenced blocks and of inline code spans outside them."""
    regions = [m.group(1) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    regions.extend(m.group(2) for m in INLINE.finditer(prose))
    return regions


def invocations(text: str) -> list[list[str]]:
    """The words after each `modelplane` command word in the code of a Markdown text."""
    found = []
    for region in code_regions(text):
        for line in region.splitlines():
            for match in INVOCATION.finditer(line):
                found.append(match.group(1).split())
    return found


def check_invocation(root: Any, words: list[str]) -> str | None:
    """Why `modelplane WORDS` names no command, or None when it does (arguments are not checked)."""
    command = root
    path = ["modelplane"]
    for word in words:
        subcommands = getattr(command, "commands", None)
        if not isinstance(subcommands, dict) or not WORD.match(word):
            return None  # a leaf's arguments, an option, a placeholder or an ellipsis
        sub = subcommands.get(word)
        if sub is None:
            return f"`{' '.join(path)}` has no subcommand {word!r} (it has {sorted(subcommands)})"
        command = sub
        path.append(word)
    return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def broken_links(path: Path) -> list[str]:
    """Relative links (and their #anchors) in ``path`` that point at nothing."""
    problems = []
    text = path.read_text()
    body = INLINE.sub("", FENCE.sub("", text))  # a link inside code is not a link
    for match in LINK.finditer(body):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{target}: {resolved} does not exist")
            continue
        if anchor and resolved.suffix == ".md":
            anchors = {slug(h) for h in HEADING.findall(FENCE.sub("", resolved.read_text()))}
            if anchor not in anchors:
                problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


@pytest.fixture(scope="module")
def cli() -> Any:
    return typer.main.get_command(app)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_modelplane_command_in_the_docs_exists(path: Path, cli: Any) -> None:
    problems = [why for words in invocations(path.read_text()) if (why := check_invocation(cli, words))]
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_resolves(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_docs_show_commands_and_the_index_links_every_page() -> None:
    """Guards the checks above: they must see commands, and no page may be unreachable."""
    commands = [w for p in DOC_FILES for w in invocations(p.read_text())]
    assert len(commands) > 50
    index = (ROOT / "docs" / "README.md").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT / "docs").as_posix()
        if relative != "README.md":
            assert f"]({relative})" in index, f"docs/README.md does not link {relative}"
    assert "](docs/README.md)" in (ROOT / "README.md").read_text()


def test_the_checks_catch_a_wrong_command_and_a_broken_link(tmp_path: Path, cli: Any) -> None:
    text = (
        "Run `modelplane registry models create iris`, then `modelplane registry modles list`\n"
        "```bash\nmodelplane deploy -f x.yaml && modelplane nosuch --flag\n```\n"
        "See [a](missing.md), [b](other.md#nowhere), [c](other.md#real-heading), [d](https://x.io/y).\n"
    )
    found = [why for words in invocations(text) if (why := check_invocation(cli, words))]
    assert len(found) == 2
    assert any("'modles'" in why for why in found)
    assert any("'nosuch'" in why for why in found)
    (tmp_path / "other.md").write_text("# Real `heading`\n")
    (tmp_path / "page.md").write_text(text)
    broken = broken_links(tmp_path / "page.md")
    assert [b.split(":")[0] for b in broken] == ["missing.md", "other.md#nowhere"]
