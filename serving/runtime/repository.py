"""The model repository on disk, in Triton's layout: ``ROOT/NAME/config.pbtxt``, ``ROOT/NAME/VERSION/``.

Pure reading: which models exist, which versions the config's version policy selects. Names
that are not plain folder names (``..``, ``a/b``, hidden folders) are refused, so a name taken
from a URL can never reach outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelplane.serving.runtime.config import ConfigError, ModelSpec, parse_config

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def valid_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.fullmatch(name)) and ".." not in name


def list_models(root: Path) -> list[str]:
    """Names of the model folders (those with a config.pbtxt), sorted."""
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and valid_model_name(p.name) and (p / "config.pbtxt").is_file()
    )


def model_dir(root: Path, name: str) -> Path:
    """The folder of model ``name``; ``KeyError`` when there is none (or the name is not plain)."""
    if not valid_model_name(name):
        raise KeyError(name)
    path = root / name
    if not (path / "config.pbtxt").is_file():
        raise KeyError(name)
    return path


def read_spec(root: Path, name: str) -> ModelSpec:
    path = model_dir(root, name) / "config.pbtxt"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"model {name!r}: cannot read config.pbtxt: {exc}") from exc
    return parse_config(text, name)


def available_versions(directory: Path) -> list[int]:
    """Numeric version folders present on disk, ascending."""
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def select_versions(spec: ModelSpec, on_disk: list[int]) -> list[int]:
    """Apply the version policy. A model fetched from ``artifact_uri`` with no folder is version 1."""
    if not on_disk and spec.artifact_uri:
        on_disk = [1]
    kind, values = spec.version_policy
    if kind == "all":
        chosen = on_disk
    elif kind == "specific":
        chosen = [v for v in on_disk if v in values]
    else:
        chosen = on_disk[-values[0] :]
    if not chosen:
        raise ConfigError(
            f"model {spec.name!r}: no version folder matches its version policy ({kind} {list(values)})"
        )
    return chosen
