"""Fetch a model artifact to a local file: local path, ``file://`` or HTTP(S), checked by sha256.

Downloads go to a temporary file in the cache folder and are renamed into place only after the
digest matches, so a half-written or tampered file is never loaded. A cached file whose digest
still matches is reused without downloading again. The bearer token for HTTP(S) comes from
``MODELPLANE_ARTIFACT_TOKEN`` or the file named by ``MODELPLANE_ARTIFACT_TOKEN_FILE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

TOKEN_ENV = "MODELPLANE_ARTIFACT_TOKEN"  # noqa: S105 (the variable name, not a secret)
TOKEN_FILE_ENV = "MODELPLANE_ARTIFACT_TOKEN_FILE"  # noqa: S105
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """The artifact cannot be fetched or does not match its digest; the message says which."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bearer_token(environ: dict[str, str] | None = None) -> str | None:
    """The token to send with HTTP(S) downloads, from the environment or a mounted file."""
    env = os.environ if environ is None else environ
    if token := env.get(TOKEN_ENV):
        return token.strip()
    if path := env.get(TOKEN_FILE_ENV):
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ArtifactError(f"cannot read the artifact token file {path}: {exc}") from exc
    return None


def artifact_filename(uri: str, default: str) -> str:
    """The local file name for a URI: its last path segment if it is a plain, safe name."""
    name = unquote(urlparse(uri).path.rsplit("/", 1)[-1])
    if _SAFE_NAME.fullmatch(name) and Path(name).suffix in (".pt", ".pt2", ".pth"):
        return name
    return default


def fetch(
    uri: str,
    sha256: str | None,
    cache_dir: Path,
    *,
    filename: str = "model.pt",
    timeout_s: float = 300.0,
    attempts: int = 3,
) -> Path:
    """Return a local path holding the artifact at ``uri``, verified against ``sha256`` when given."""
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ArtifactError(f"artifact_sha256 {sha256!r} is not 64 lowercase hex digits")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not path.is_file():
            raise ArtifactError(f"artifact {uri} does not exist or is not a file")
        if sha256 is not None and (actual := sha256_file(path)) != sha256:
            raise ArtifactError(f"artifact {uri} has sha256 {actual}, expected {sha256}")
        return path
    if parsed.scheme not in ("http", "https"):
        raise ArtifactError(
            f"artifact URI scheme {parsed.scheme!r} is not supported (use a path, file://, http(s)://)"
        )

    key = sha256 or hashlib.sha256(uri.encode()).hexdigest()
    target_dir = cache_dir / key
    target = target_dir / artifact_filename(uri, filename)
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256):
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    headers = {}
    if token := bearer_token():
        headers["Authorization"] = f"Bearer {token}"
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            _download(uri, headers, target, sha256, timeout_s)
            return target
        except ArtifactError:
            raise
        except (httpx.TransportError, OSError) as exc:
            last = exc
            time.sleep(min(2.0**attempt, 5.0))
    raise ArtifactError(f"cannot download {uri} after {attempts} attempts: {last}")


def _download(uri: str, headers: dict[str, str], target: Path, sha256: str | None, timeout_s: float) -> None:
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream("GET", uri, headers=headers, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                raise ArtifactError(
                    f"downloading {uri} answered HTTP {resp.status_code}"
                    + (" (check the artifact token)" if resp.status_code in (401, 403) else "")
                )
            for chunk in resp.iter_bytes(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ArtifactError(f"downloaded {uri} has sha256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
