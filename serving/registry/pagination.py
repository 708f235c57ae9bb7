"""Opaque cursors for keyset pagination: a page continues after the last key the client saw.

Keyset (not offset) pagination stays correct while rows are added and costs the same on page 1000 as
on page 1. The cursor is base64url of ``<kind>:<key>``; the kind stops a models cursor from being
replayed against the versions list.
"""

from __future__ import annotations

import base64
import binascii

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class InvalidCursorError(ValueError):
    """The cursor was not produced by this registry for this list."""


def encode_cursor(kind: str, key: int) -> str:
    raw = f"{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The key after which the next page starts; ``InvalidCursorError`` for anything else."""
    if not cursor or len(cursor) > 64:
        raise InvalidCursorError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursorError("cursor is not valid base64url") from exc
    prefix, sep, key = raw.partition(":")
    if prefix != kind or not sep or not key.isdigit() or len(key) > 18:
        raise InvalidCursorError(f"cursor does not belong to the {kind} list")
    return int(key)
