"""Prepare a model repository before the runtime starts (the serving pod's init container).

The operator hands over the model's Triton configuration (with the artifact's URI and sha256 as
parameters); this writes it as ``NAME/config.pbtxt``, creates the version folder, and downloads the
artifact into the cache the runtime reads, verifying its digest. A download that fails fails the
init container with a clear message, before the serving container starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from modelplane.serving.runtime.artifacts import fetch
from modelplane.serving.runtime.config import ConfigError, parse_config
from modelplane.serving.runtime.repository import valid_model_name


class PrepareError(RuntimeError):
    """The repository cannot be prepared; the message says why."""


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_model(
    repository: Path, name: str, version: int, config_text: str, cache_dir: Path | None = None
) -> Path:
    """Write the configuration, create the version folder, pre-fetch the artifact; returns its path
    (or the version folder when the configuration names no artifact)."""
    if not valid_model_name(name):
        raise PrepareError(f"invalid model name {name!r}")
    if version < 1:
        raise PrepareError(f"model versions start at 1, got {version}")
    try:
        spec = parse_config(config_text, name)
    except ConfigError as exc:
        raise PrepareError(f"the model configuration is invalid: {exc}") from exc
    if spec.name != name:
        raise PrepareError(f"the configuration names model {spec.name!r}, expected {name!r}")
    folder = repository / name
    write_atomically(folder / "config.pbtxt", config_text)
    version_dir = folder / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    if spec.artifact_uri is None:
        return version_dir
    return fetch(
        spec.artifact_uri,
        spec.artifact_sha256,
        cache_dir or repository / ".cache",
        filename=spec.default_model_filename or "model.pt",
    )
