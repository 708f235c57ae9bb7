"""Pure checks on everything a client names: models, aliases, tags, artifact file names, sources.

They run before anything is stored, so bad input changes nothing. Each returns the value unchanged
or raises ``ValueError`` with a message that says what is allowed (pydantic turns it into a
field-level validation error).
"""

from __future__ import annotations

import re
import urllib.parse

MODEL_NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
ALIAS_PATTERN = r"^[a-z](?:[a-z0-9-]{0,62}[a-z0-9])?$"
TAG_KEY_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$"
FILENAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?$"
K8S_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$"
TASK_PATTERN = r"^[a-z0-9-]{1,64}$"
#: One segment of a file's path inside a directory artifact: a safe file name ('_' allowed first).
PATH_SEGMENT_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9_-])?$"
MAX_PATH_LENGTH = 512
MAX_PATH_DEPTH = 8
SOURCE_SCHEMES = frozenset({"runs", "models", "s3", "gs", "gcs", "azure", "hf", "oci", "http", "https"})
MAX_SOURCE_LENGTH = 2048

_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_ALIAS_RE = re.compile(ALIAS_PATTERN)
_TAG_KEY_RE = re.compile(TAG_KEY_PATTERN)
_FILENAME_RE = re.compile(FILENAME_PATTERN)
_K8S_NAME_RE = re.compile(K8S_NAME_PATTERN)
_TASK_RE = re.compile(TASK_PATTERN)
_PATH_SEGMENT_RE = re.compile(PATH_SEGMENT_PATTERN)


def _no_dot_segments(value: str, what: str) -> None:
    if ".." in value:
        raise ValueError(f"{what} must not contain '..'")


def check_model_name(name: str) -> str:
    """1-128 letters, digits, '.', '_' or '-', starting and ending with a letter or digit, no '..'."""
    if not _MODEL_NAME_RE.fullmatch(name):
        raise ValueError(
            "model name must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    _no_dot_segments(name, "model name")
    return name


def check_alias(name: str) -> str:
    """Lower-case letters, digits and '-', starting with a letter (so an alias never looks like a number)."""
    if not _ALIAS_RE.fullmatch(name):
        raise ValueError(
            "alias must be 1-64 characters of lower-case letters, digits or '-', "
            "starting with a letter and ending with a letter or digit"
        )
    return name


def check_tag_key(key: str) -> str:
    if not _TAG_KEY_RE.fullmatch(key):
        raise ValueError(
            "tag key must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    _no_dot_segments(key, "tag key")
    return key


def check_filename(name: str) -> str:
    """A plain file name (no directories): the name an artifact is downloaded as."""
    if not _FILENAME_RE.fullmatch(name):
        raise ValueError(
            "artifact file name must be 1-255 characters of letters, digits, '.', '_' or '-' "
            "with no directory part, starting and ending with a letter or digit"
        )
    _no_dot_segments(name, "artifact file name")
    return name


def check_task(task: str) -> str:
    """A Hugging Face pipeline task name such as 'text-generation': 1-64 of a-z, 0-9 and '-'."""
    if not _TASK_RE.fullmatch(task):
        raise ValueError("task must be 1-64 characters of lower-case letters, digits or '-'")
    return task


def check_file_path(path: str) -> str:
    """The relative POSIX path of one file of a directory artifact, such as 'tokenizer/vocab.json'.

    At most 512 characters and 8 segments; every segment a safe file name (letters, digits, '.',
    '_' or '-', starting with a letter, digit or '_', not ending with '.', no '..'), so no leading
    '/', no empty, '.' or '..' segment, no backslash, no control character: the path can never
    leave the directory it is written into, on any operating system.
    """
    if not path:
        raise ValueError("file path must not be empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"file path must be at most {MAX_PATH_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ValueError("file path must not contain control characters")
    if "\\" in path:
        raise ValueError("file path must use '/' between segments, not backslashes")
    if path.startswith("/"):
        raise ValueError("file path must be relative (no leading '/')")
    segments = path.split("/")
    if len(segments) > MAX_PATH_DEPTH:
        raise ValueError(f"file path must have at most {MAX_PATH_DEPTH} segments")
    for segment in segments:
        if not segment:
            raise ValueError("file path must not contain an empty segment ('//' or a trailing '/')")
        if segment in {".", ".."} or ".." in segment:
            raise ValueError("file path must not contain '.' or '..' segments")
        if not _PATH_SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"file path segment {segment!r} must be letters, digits, '.', '_' or '-', "
                "starting with a letter, digit or '_' and not ending with '.'"
            )
    return path


def check_k8s_name(name: str) -> str:
    if not _K8S_NAME_RE.fullmatch(name):
        raise ValueError(
            "must be a Kubernetes object name: lower-case letters, digits, '.' or '-', at most 253 characters"
        )
    return name


def _fully_unquoted(value: str, rounds: int = 4) -> str:
    """Percent-decode until stable (bounded), so '%252e%252e' is seen as '..'."""
    for _ in range(rounds):
        decoded = urllib.parse.unquote(value)
        if decoded == value:
            return decoded
        value = decoded
    return value


def check_source(source: str) -> str:
    """A reference to where the model came from, never a local path the server could be made to read.

    Allowed: ``scheme://authority/path`` for the schemes in ``SOURCE_SCHEMES`` (and ``runs:/ID/path``,
    ``models:/name/version``), with no '..' path segment, backslash, control character or empty
    authority, after any amount of percent-decoding. ``file:`` and bare paths are refused: the
    registry stores ``source`` as metadata and never dereferences it, and neither should clients.
    """
    if len(source) > MAX_SOURCE_LENGTH:
        raise ValueError(f"source must be at most {MAX_SOURCE_LENGTH} characters")
    decoded = _fully_unquoted(source)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise ValueError("source must not contain control characters (NUL, newline, ...)")
    if "\\" in decoded:
        raise ValueError("source must not contain backslashes")
    parsed = urllib.parse.urlsplit(decoded)
    scheme = parsed.scheme.lower()
    if scheme not in SOURCE_SCHEMES:
        raise ValueError(
            "source must be a URI with one of the schemes "
            + ", ".join(sorted(SOURCE_SCHEMES))
            + " (not a local path)"
        )
    if scheme in {"runs", "models"}:
        if parsed.netloc or not parsed.path.startswith("/") or parsed.path.startswith("//"):
            raise ValueError(f"source must look like '{scheme}:/<id>/<path>'")
    elif not parsed.hostname:
        raise ValueError("source must name a host or bucket (for example 's3://bucket/key')")
    if parsed.username or parsed.password:
        raise ValueError("source must not carry credentials")
    for part in (parsed.path, parsed.query, parsed.fragment):
        segments = re.split(r"[/]", part)
        if any(seg in {"..", "."} for seg in segments) or ".." in part:
            raise ValueError("source must not contain '..' or '.' path segments")
    return source
