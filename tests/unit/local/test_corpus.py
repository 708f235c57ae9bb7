"""demo-chat's training text: the docs' prose by section, or the snapshot shipped with the package."""

from __future__ import annotations

from pathlib import Path

from modelplane.local.corpus import (
    Section,
    load_corpus,
    markdown_sections,
    normalize_word,
    repository_docs,
    repository_root,
    snapshot_corpus,
    write_snapshot,
)

MARKDOWN = """\
# Title

Intro line one,
wrapped onto **two** lines with `code` and a [link](docs/x.md).
<!-- a comment -->

## Run it

```bash
make run --never-seen-in-prose
```

- first item
- second item
  continued

| a | b |
|---|---|

## Empty heading
"""


def test_markdown_becomes_prose_sections() -> None:
    assert markdown_sections(MARKDOWN) == [
        Section("Title", ("Intro line one, wrapped onto two lines with code and a link.",)),
        Section("Run it", ("first item", "second item continued")),
    ]


def test_words_are_compared_without_case_and_surrounding_punctuation() -> None:
    assert normalize_word("\"Router's,") == "router's"
    assert normalize_word("(the") == "the"
    assert normalize_word("--") == ""


def test_the_checkout_docs_are_the_corpus_and_the_snapshot_is_their_copy(tmp_path: Path) -> None:
    root = repository_root()
    assert root is not None  # the tests run from a checkout
    live = load_corpus(root)
    assert live.source.startswith("README.md and ")
    assert {"modelplane", "router", "registry", "deployment"} <= live.words()
    copy = write_snapshot(root, tmp_path / "snapshot.json")
    assert snapshot_corpus(copy).sections == live.sections


def test_without_docs_the_shipped_snapshot_is_used(tmp_path: Path) -> None:
    assert repository_docs(tmp_path) == []
    corpus = load_corpus(tmp_path)
    assert corpus.source == "the documentation shipped with the package"
    assert len(corpus.sections) > 20
    assert len(corpus.text()) > 20_000
    assert {"modelplane", "router", "registry"} <= corpus.words()
