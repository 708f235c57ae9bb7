"""API tokens: random secrets stored only as sha256, scopes read < write < admin, optional name prefixes.

A token limited to prefixes (for example ``team-a.``) can read and write only models whose names
start with one of them; listing filters to them. The first admin token can come from
``MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN`` (stored hashed, as the token named ``bootstrap``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from modelplane.serving.registry import errors

TOKEN_PREFIX = "mpr_"  # noqa: S105 - a marker, not a secret
BOOTSTRAP_ENV = "MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN"
BOOTSTRAP_NAME = "bootstrap"
SCOPE_RANK = {"read": 1, "write": 2, "admin": 3}
MIN_BOOTSTRAP_LENGTH = 16


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the audit log's actor), its scopes and prefix limits."""

    name: str
    scopes: tuple[str, ...]
    name_prefixes: tuple[str, ...] = ()

    def rank(self) -> int:
        return max((SCOPE_RANK.get(s, 0) for s in self.scopes), default=0)

    def has_scope(self, scope: str) -> bool:
        return self.rank() >= SCOPE_RANK[scope]

    def may_touch(self, model_name: str) -> bool:
        return not self.name_prefixes or any(model_name.startswith(p) for p in self.name_prefixes)


ANONYMOUS = Principal(name="anonymous", scopes=("read",))


def require(principal: Principal, scope: str, model_name: str | None = None) -> None:
    """Raise 403 unless ``principal`` has ``scope`` (or higher) and may touch ``model_name``.

    An anonymous caller (anonymous read switched on) asking for more than read gets 401: a token
    would help, so that is the answer that tells them what to do.
    """
    if principal is ANONYMOUS and not principal.has_scope(scope):
        raise errors.UnauthorizedError(f"this operation needs a token with the {scope!r} scope")
    if not principal.has_scope(scope):
        raise errors.ForbiddenError(
            f"this operation needs the {scope!r} scope; token {principal.name!r} has {list(principal.scopes)}"
        )
    if model_name is not None and not principal.may_touch(model_name):
        raise errors.ForbiddenError(
            f"token {principal.name!r} is limited to model names starting with "
            f"{list(principal.name_prefixes)}"
        )


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class TokenCache:
    """A short-lived cache of token lookups, so a hot read path is not one extra query per request.

    Revocation through this process clears the cache at once; another replica notices within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 2.0, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, token_hash: str) -> tuple[bool, Principal | None]:
        with self._lock:
            hit = self._entries.get(token_hash)
            if hit is None or hit[0] < time.monotonic():
                return False, None
            return True, hit[1]

    def put(self, token_hash: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[token_hash] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def principal_from(name: str, scopes: Sequence[str], prefixes: Sequence[str]) -> Principal:
    return Principal(name=name, scopes=tuple(scopes), name_prefixes=tuple(prefixes))
