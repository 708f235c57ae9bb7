"""The registry's settings: command-line flags first, then ``MODELPLANE_REGISTRY_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from modelplane.serving.registry.db import SQLITE_SYNCHRONOUS_DEFAULT, sqlite_synchronous_level
from modelplane.serving.registry.webhooks import WebhookSettings

ENV_PREFIX = "MODELPLANE_REGISTRY_"
DEFAULT_MAX_ARTIFACT_BYTES = 20 * 1024**3
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(ENV_PREFIX + name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(ENV_PREFIX + name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(ENV_PREFIX + name)
    return float(value) if value else default


@dataclass(frozen=True)
class Settings:
    database_url: str
    artifact_root: Path
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    anonymous_read: bool = False
    bootstrap_token: str | None = None
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    pool_size: int = 10
    sqlite_synchronous: str = SQLITE_SYNCHRONOUS_DEFAULT
    """SQLite's ``PRAGMA synchronous``: FULL (durable, the default) or NORMAL (throwaway data only)."""

    def __post_init__(self) -> None:
        # A bad level fails here, at start-up, naming the choices (ValueError), never at first write.
        object.__setattr__(self, "sqlite_synchronous", sqlite_synchronous_level(self.sqlite_synchronous))

    @classmethod
    def from_env(
        cls,
        database_url: str | None = None,
        artifact_root: Path | None = None,
        sqlite_synchronous: str | None = None,
    ) -> Settings:
        """Settings from the environment; explicit arguments win."""
        url = (
            database_url or os.environ.get(ENV_PREFIX + "DATABASE_URL") or "sqlite:///modelplane-registry.db"
        )
        root = artifact_root or Path(os.environ.get(ENV_PREFIX + "ARTIFACT_ROOT", "modelplane-artifacts"))
        return cls(
            database_url=url,
            artifact_root=root,
            max_artifact_bytes=_env_int("MAX_ARTIFACT_BYTES", DEFAULT_MAX_ARTIFACT_BYTES),
            max_body_bytes=_env_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            anonymous_read=_env_bool("ANONYMOUS_READ"),
            bootstrap_token=os.environ.get(ENV_PREFIX + "BOOTSTRAP_TOKEN") or None,
            webhooks=WebhookSettings(
                allow_loopback=_env_bool("WEBHOOK_ALLOW_LOOPBACK"),
                max_attempts=_env_int("WEBHOOK_MAX_ATTEMPTS", 5),
                backoff_base_s=_env_float("WEBHOOK_BACKOFF_BASE_S", 2.0),
                backoff_max_s=_env_float("WEBHOOK_BACKOFF_MAX_S", 300.0),
                poll_interval_s=_env_float("WEBHOOK_POLL_INTERVAL_S", 1.0),
            ),
            pool_size=_env_int("POOL_SIZE", 10),
            sqlite_synchronous=sqlite_synchronous
            or os.environ.get(ENV_PREFIX + "SQLITE_SYNCHRONOUS")
            or SQLITE_SYNCHRONOUS_DEFAULT,
        )
