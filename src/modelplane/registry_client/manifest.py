"""Directory artifacts: the file entry, the manifest digest, and hashing and checking a directory.

A directory artifact (a Hugging Face model folder: config, tokenizer, safetensors shards) is a set
of files, each stored content-addressed under its own sha256. The directory as a whole is named by
the sha256 of its *canonical manifest*::

    json.dumps(sorted([[path, sha256_hex, size], ...]), separators=(",", ":")).encode()

``manifest_digest`` computes it; the registry (when a directory is committed), the CLI and client
(when uploading and downloading) and the serving runtime (before it loads a directory) all call this
one function, so they agree byte for byte. Paths are relative POSIX paths checked by
``validation.check_file_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from modelplane.registry_client import validation

#: The most files one directory artifact may have.
MAX_FILES = 10_000
HEX_PATTERN = r"^[0-9a-f]{64}$"
_CHUNK = 1 << 20

FilePath = Annotated[
    str,
    Field(min_length=1, max_length=validation.MAX_PATH_LENGTH, description="Relative POSIX path"),
    AfterValidator(validation.check_file_path),
]


class ManifestError(ValueError):
    """A directory or manifest that cannot be used; the message names the files concerned."""


class FileEntry(BaseModel):
    """One file of a directory artifact: where it lives in the directory, its sha256 and size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: FilePath
    sha256: Annotated[str, Field(pattern=HEX_PATTERN, description="sha256 of the file: 64 lower-case hex")]
    size: Annotated[int, Field(ge=0, le=2**63 - 1, description="bytes")]


def _entries(files: Iterable[FileEntry | tuple[str, str, int]]) -> list[FileEntry]:
    out = [f if isinstance(f, FileEntry) else FileEntry(path=f[0], sha256=f[1], size=f[2]) for f in files]
    seen: set[str] = set()
    twice: set[str] = set()
    for f in out:
        (twice if f.path in seen else seen).add(f.path)
    if twice:
        raise ManifestError(
            f"a manifest names each path once; named more than once: {', '.join(sorted(twice)[:20])}"
        )
    return out


def manifest_bytes(files: Iterable[FileEntry | tuple[str, str, int]]) -> bytes:
    """The canonical manifest, whose sha256 names the directory:
    ``json.dumps(sorted([[path, sha256_hex, size], ...]), separators=(",", ":")).encode()``."""
    rows = sorted([f.path, f.sha256, f.size] for f in _entries(files))
    return json.dumps(rows, separators=(",", ":")).encode()


def manifest_digest(files: Iterable[FileEntry | tuple[str, str, int]]) -> str:
    """``sha256:<hex>`` of the canonical manifest: the same whatever the order of ``files``.

    Accepts ``FileEntry`` objects or ``(path, sha256_hex, size)`` tuples (checked as FileEntry);
    raises ``ManifestError`` when a path is named twice, ``pydantic.ValidationError`` for a bad entry.
    """
    return "sha256:" + hashlib.sha256(manifest_bytes(files)).hexdigest()


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The file's sha256 as 64 lower-case hex characters (no ``sha256:`` prefix)."""
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return hasher.hexdigest()


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) of every regular file below ``root``; hidden names skipped."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if d.startswith("."):
                dirnames.remove(d)
            elif (base / d).is_symlink():
                raise ManifestError(
                    f"{base / d} is a symbolic link to a directory; copy the files into {root} instead"
                )
        for name in filenames:
            if name.startswith("."):
                continue
            full = base / name
            if not stat.S_ISREG(full.stat().st_mode):  # follows a symlink to a file
                raise ManifestError(f"{full} is not a regular file")
            found.append((full.relative_to(root).as_posix(), full))
    return sorted(found)


def directory_files(root: Path) -> list[tuple[str, Path]]:
    """The files a directory artifact of ``root`` holds, as (relative path, local file), sorted.

    Names starting with '.' (``.git``, ``.gitattributes``, ``.cache``) are left out; every other
    path must pass ``validation.check_file_path``; at most ``MAX_FILES`` files.
    """
    if not root.is_dir():
        raise ManifestError(f"{root} is not a directory")
    found = _walk(root)
    if not found:
        raise ManifestError(f"{root} holds no files")
    if len(found) > MAX_FILES:
        raise ManifestError(f"{root} holds {len(found)} files; a directory artifact has at most {MAX_FILES}")
    for rel, _ in found:
        try:
            validation.check_file_path(rel)
        except ValueError as exc:
            raise ManifestError(f"{root}: {rel!r}: {exc}") from None
    return found


def scan_directory(root: Path, progress: Callable[[int], None] | None = None) -> list[FileEntry]:
    """Every file of ``root`` (see ``directory_files``) with its sha256 and size, sorted by path."""
    return [
        FileEntry(path=rel, sha256=sha256_file(full, progress), size=full.stat().st_size)
        for rel, full in directory_files(root)
    ]


def verify_directory(root: Path, files: Iterable[FileEntry], expected_digest: str | None = None) -> None:
    """Check that every listed file is in ``root`` with its size and sha256 (and, when given, that the
    list's manifest digest is ``expected_digest``); raise ``ManifestError`` naming what differs.

    Files in ``root`` that the list does not name are ignored.
    """
    entries = _entries(files)
    if expected_digest is not None and manifest_digest(entries) != expected_digest:
        raise ManifestError(
            f"the file list hashes to {manifest_digest(entries)}, not the expected {expected_digest}"
        )
    bad: list[str] = []
    for entry in entries:
        local = root.joinpath(*entry.path.split("/"))
        if not local.is_file():
            bad.append(f"{entry.path} (missing)")
        elif local.stat().st_size != entry.size:
            bad.append(f"{entry.path} ({local.stat().st_size} bytes, expected {entry.size})")
        elif sha256_file(local) != entry.sha256:
            bad.append(f"{entry.path} (sha256 differs)")
    if bad:
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ManifestError(f"{root} does not match its manifest: {', '.join(bad[:20])}{more}")
