"""Content-addressed artifact store on a filesystem: ``<root>/sha256/ab/cdef...``.

An upload streams into a temporary file inside the root while its sha256 is computed; only when the
digest equals the one the client declared is the file fsynced and atomically renamed into place, so
a blob is never visible half-written and never under a wrong name. Any failure (digest mismatch,
size limit, client gone, server killed) leaves at most a temp file, which is deleted at once or, after
a crash, by ``sweep_temp`` at the next start. Every path is derived from a validated hex digest and
checked to stay inside the root: nothing reads or writes outside it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from modelplane.serving.registry import errors

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
TEMP_DIR = "tmp"
BLOB_DIR = "sha256"


def parse_digest(value: str) -> str:
    """Accept ``sha256:<hex>`` or bare ``<hex>`` (any case); return the canonical ``sha256:<hex>``."""
    candidate = value.strip().lower()
    if candidate.startswith("sha256:"):
        candidate = candidate[len("sha256:") :]
    if not HEX_RE.fullmatch(candidate):
        raise errors.InvalidInputError(
            "the artifact digest must be 'sha256:' followed by 64 hex characters "
            "(the sha256 of the bytes sent)"
        )
    return "sha256:" + candidate


def is_within(root: Path, candidate: Path) -> bool:
    """True when ``candidate`` (resolved, symlinks followed) is ``root`` or below it."""
    root_r = root.resolve()
    try:
        candidate.resolve().relative_to(root_r)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    size: int
    path: Path


class ArtifactStore:
    def __init__(self, root: Path, max_bytes: int, chunk_size: int = 1 << 20) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        (self.root / TEMP_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / BLOB_DIR).mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives; refuses anything but a canonical digest and any path outside the root."""
        if not DIGEST_RE.fullmatch(digest):
            raise errors.InvalidInputError(f"not a canonical sha256 digest: {digest!r}")
        hexpart = digest.split(":", 1)[1]
        path = self.root / BLOB_DIR / hexpart[:2] / hexpart[2:]
        if not is_within(self.root, path):
            raise errors.InvalidInputError("artifact path escapes the artifact root")
        return path

    def exists(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def sweep_temp(self) -> int:
        """Delete temp files left by uploads that never finished (a crash); returns how many."""
        removed = 0
        for entry in (self.root / TEMP_DIR).iterdir():
            if entry.is_file() and not entry.is_symlink() and entry.name.startswith("upload-"):
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def temp_files(self) -> list[Path]:
        return sorted((self.root / TEMP_DIR).glob("upload-*"))

    async def put(
        self, chunks: AsyncIterator[bytes], expected_digest: str, declared_size: int | None
    ) -> StoredBlob:
        """Store a stream whose sha256 must be ``expected_digest``; raise (storing nothing) otherwise."""
        if declared_size is not None and declared_size > self.max_bytes:
            raise errors.PayloadTooLargeError(
                f"the artifact is {declared_size} bytes; this registry accepts at most {self.max_bytes}"
            )
        temp = self.root / TEMP_DIR / f"upload-{secrets.token_hex(16)}"
        hasher = hashlib.sha256()
        size = 0
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise errors.PayloadTooLargeError(
                            f"the artifact exceeds this registry's limit of {self.max_bytes} bytes"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                if declared_size is not None and size != declared_size:
                    raise errors.IncompleteUploadError(
                        f"received {size} of the {declared_size} bytes announced; upload the artifact again"
                    )
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + hasher.hexdigest()
            if actual != expected_digest:
                raise errors.DigestMismatchError(
                    f"the bytes received hash to {actual}, not the declared {expected_digest}; "
                    "nothing was stored: check the file and upload it again"
                )
            final = self.blob_path(actual)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.is_file():
                temp.unlink()
            else:
                os.replace(temp, final)
                _fsync_dir(final.parent)
            return StoredBlob(actual, size, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
