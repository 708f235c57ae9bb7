"""The text ``demo-chat`` learns from: Modelplane's own documentation, as plain prose by section.

The Markdown of the repository's ``README.md`` and ``docs/**/*.md`` becomes sections (a heading
and its paragraphs): code blocks, tables, HTML comments, link targets and Markdown marks are
dropped, wrapped lines joined. A package installed without its repository (a wheel) has no docs
beside it, so it ships the same sections as ``demo_chat_corpus.json`` (a snapshot taken from the
docs with :func:`write_snapshot`); :func:`load_corpus` takes the live docs when it finds them and
the snapshot otherwise. Everything here but the two file readers is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import modelplane

SNAPSHOT = Path(__file__).with_name("demo_chat_corpus.json")

_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_MARKS = re.compile(r"(\*\*|__|`+|(?<!\w)\*(?!\s)|(?<=\S)\*(?!\w))")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Section:
    """A heading and the prose under it (paragraphs, list items each one paragraph)."""

    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """The sections to learn and where they came from (for the version's description)."""

    sections: tuple[Section, ...]
    source: str

    def text(self) -> str:
        """All of it as one text, a heading line before its paragraphs."""
        return "\n".join(
            "\n".join((s.heading, *s.paragraphs)) if s.heading else "\n".join(s.paragraphs)
            for s in self.sections
        )

    def words(self) -> frozenset[str]:
        """The corpus's words: lower-case, punctuation stripped from both ends."""
        return frozenset(w for w in (normalize_word(w) for w in self.text().split()) if w)


def normalize_word(word: str) -> str:
    """How words are compared with the corpus: lower-case, punctuation stripped from both ends."""
    return word.strip(".,;:!?()[]{}\"'`*_-").lower()


def _inline(text: str) -> str:
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _MARKS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def markdown_sections(markdown: str) -> list[Section]:
    """The prose of one Markdown text, section by section (sections with no prose are dropped)."""
    text = _COMMENT.sub("", _FENCE.sub("", markdown))
    sections: list[Section] = []
    heading = ""
    paragraphs: list[str] = []
    current: list[str] = []

    def end_paragraph() -> None:
        if current:
            paragraph = _inline(" ".join(current))
            if paragraph:
                paragraphs.append(paragraph)
            current.clear()

    def end_section() -> None:
        end_paragraph()
        if paragraphs:
            sections.append(Section(heading, tuple(paragraphs)))
        paragraphs.clear()

    for line in text.splitlines():
        stripped = line.strip()
        match = _HEADING.match(stripped)
        if match:
            end_section()
            heading = _inline(match.group(2))
        elif not stripped or stripped.startswith(("|", "<", ">")) or set(stripped) <= set("-=*_ "):
            end_paragraph()  # blank lines, tables, HTML, quotes and rules end a paragraph
        elif _LIST_MARK.match(line):
            end_paragraph()
            current.append(_LIST_MARK.sub("", line))
        else:
            current.append(stripped)
    end_section()
    return sections


def repository_docs(root: Path) -> list[Path]:
    """``README.md`` and ``docs/**/*.md`` of a checkout, in a fixed order (none when absent)."""
    readme = root / "README.md"
    docs = sorted((root / "docs").rglob("*.md")) if (root / "docs").is_dir() else []
    return [readme, *docs] if readme.is_file() and docs else []


def repository_root() -> Path | None:
    """The checkout this package runs from (an editable install), or None for an installed wheel."""
    root = Path(modelplane.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        if 'name = "modelplane"' in pyproject.read_text():
            return root
    except OSError:
        return None
    return None


def corpus_from_files(paths: Sequence[Path], source: str) -> Corpus:
    sections = [s for path in paths for s in markdown_sections(path.read_text(errors="replace"))]
    return Corpus(tuple(sections), source)


def _to_json(sections: Iterable[Section]) -> str:
    items = [{"heading": s.heading, "paragraphs": list(s.paragraphs)} for s in sections]
    return json.dumps(items, indent=1, ensure_ascii=False) + "\n"


def snapshot_corpus(path: Path = SNAPSHOT) -> Corpus:
    """The sections shipped with the package."""
    items = json.loads(path.read_text())
    sections = tuple(Section(str(i["heading"]), tuple(str(p) for p in i["paragraphs"])) for i in items)
    return Corpus(sections, "the documentation shipped with the package")


def write_snapshot(root: Path, path: Path = SNAPSHOT) -> Path:
    """Refresh the shipped snapshot from the docs of the checkout at ``root``."""
    paths = repository_docs(root)
    if not paths:
        raise FileNotFoundError(f"{root} has no README.md and docs/*.md to take a snapshot of")
    path.write_text(_to_json(corpus_from_files(paths, "").sections))
    return path


def load_corpus(root: Path | None = None) -> Corpus:
    """The docs of the checkout at ``root`` (default: this package's own, if any), else the snapshot."""
    root = root if root is not None else repository_root()
    paths = repository_docs(root) if root is not None else []
    if paths:
        corpus = corpus_from_files(paths, f"README.md and {len(paths) - 1} pages of docs/")
        if corpus.sections:
            return corpus
    return snapshot_corpus()
