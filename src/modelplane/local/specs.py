"""Reading ModelDeployment YAML files for the local stack, with the same types and rules as the CRD.

A bad file never stops the others: each problem becomes a :class:`SpecError` that names the file,
the line and the field, and the deployments from the good files are returned beside it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelplane.api.v1alpha1 import ModelDeployment, ModelDeploymentSpec

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LocalDeployment:
    """One valid ModelDeployment and the file it came from."""

    name: str
    path: Path
    spec: ModelDeploymentSpec


@dataclass(frozen=True)
class SpecError:
    """Why a file (or one document in it) was not used."""

    path: Path
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.message}"


def _line_of(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The line of the deepest YAML node along ``loc`` (1-based), for pointing at a field."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _validate(path: Path, document: Any, node: yaml.Node | None) -> LocalDeployment | list[SpecError]:
    if not isinstance(document, dict):
        return [SpecError(path, "expected a ModelDeployment mapping (apiVersion, kind, metadata, spec)")]
    try:
        deployment = ModelDeployment.model_validate(document)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            loc = [part for part in error["loc"] if isinstance(part, str | int)]
            field = ".".join(str(part) for part in loc) or None
            message = error["msg"].removeprefix("Value error, ")
            errors.append(SpecError(path, message, _line_of(node, loc), field))
        return errors
    name = deployment.metadata.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return [
            SpecError(
                path,
                "set metadata.name to a lower-case DNS label (letters, digits, '-'; at most 63)",
                _line_of(node, ["metadata", "name"]),
                "metadata.name",
            )
        ]
    return LocalDeployment(name=name, path=path, spec=deployment.spec)


def load_file(path: Path) -> tuple[list[LocalDeployment], list[SpecError]]:
    """Every ModelDeployment document in one file, and the problems found."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [SpecError(path, f"cannot read the file: {exc}")]
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [SpecError(path, f"not valid YAML: {problem}", line)]
    found: list[LocalDeployment] = []
    errors: list[SpecError] = []
    for document, node in zip(documents, nodes, strict=False):
        if document is None:
            continue
        result = _validate(path, document, node)
        if isinstance(result, list):
            errors.extend(result)
        else:
            found.append(result)
    if not found and not errors:
        errors.append(SpecError(path, "the file holds no ModelDeployment"))
    return found, errors


def load_directory(folder: Path) -> tuple[dict[str, LocalDeployment], list[SpecError]]:
    """All deployments of ``*.yaml``/``*.yml`` files in ``folder`` (sorted by file name); a name used
    twice keeps its first file and reports the second."""
    deployments: dict[str, LocalDeployment] = {}
    errors: list[SpecError] = []
    paths = (
        sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file()) if folder.is_dir() else []
    )
    for path in paths:
        found, problems = load_file(path)
        errors.extend(problems)
        for deployment in found:
            if deployment.name in deployments:
                first = deployments[deployment.name].path
                errors.append(
                    SpecError(path, f"deployment {deployment.name!r} is already defined in {first}", None)
                )
                continue
            deployments[deployment.name] = deployment
    return deployments, errors


def folder_signature(folder: Path) -> str:
    """Changes whenever a deployment file is added, removed or edited (cheap: names, sizes, mtimes)."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix in SUFFIXES:
                try:
                    stat = path.stat()
                except OSError:
                    continue
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
