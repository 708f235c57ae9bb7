"""Model files -> callable torch modules, without ever unpickling arbitrary objects.

- ``model.pt``: TorchScript (``torch.jit.load``), what Triton's PyTorch backend serves.
- ``model.pt2``: a ``torch.export`` program (``torch.export.load``).
- ``model.pth``: a state_dict, loaded with ``weights_only=True`` into the class named by the config
  parameter ``module_class`` (``package.module:ClassName``, built with no arguments).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modelplane.serving.runtime.config import ModelSpec

#: File names tried in order when the config sets no ``default_model_filename``.
MODEL_FILENAMES = ("model.pt", "model.pt2", "model.pth")


class LoadError(RuntimeError):
    """The model file exists but cannot become a module; the message says why."""


def find_model_file(version_dir: Path, default_filename: str | None = None) -> Path:
    """The model file in a version folder, by the config's name or the usual names."""
    names = (default_filename,) if default_filename else MODEL_FILENAMES
    for name in names:
        candidate = version_dir / name
        if candidate.is_file():
            return candidate
    raise LoadError(f"no model file in {version_dir} (looked for {', '.join(names)})")


def load_module(path: Path, spec: ModelSpec, device: torch.device) -> Callable[..., Any]:
    """Load ``path`` onto ``device`` in eval mode, cast to the config's precision."""
    suffix = path.suffix
    try:
        if suffix == ".pt":
            with warnings.catch_warnings():  # TorchScript is what Triton repositories hold: keep serving it
                warnings.simplefilter("ignore", DeprecationWarning)
                module: Any = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        elif suffix == ".pt2":
            module = torch.export.load(str(path)).module()
            module = module.to(device)
        elif suffix == ".pth":
            module = _load_state_dict_module(path, spec, device)
        else:
            raise LoadError(f"{path.name}: unknown model file type (use .pt, .pt2 or .pth)")
    except LoadError:
        raise
    except Exception as exc:  # torch raises many types for a bad file; all mean "cannot load"
        raise LoadError(f"{path.name}: cannot load: {exc}") from exc
    if spec.precision == "fp16":
        module = module.half()
    elif spec.precision == "bf16":
        module = module.to(torch.bfloat16)
    if hasattr(module, "eval") and suffix != ".pt2":
        module.eval()
    return module  # type: ignore[no-any-return]


def _load_state_dict_module(path: Path, spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    if not spec.module_class or ":" not in spec.module_class:
        raise LoadError(
            f"{path.name} is a state_dict: set the config parameter module_class ('package.module:ClassName')"
        )
    module_name, _, class_name = spec.module_class.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise LoadError(f"module_class {spec.module_class!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise LoadError(f"module_class {spec.module_class!r} is not a torch.nn.Module subclass")
    state = torch.load(str(path), map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise LoadError(f"{path.name} does not hold a state_dict")
    module = cls()
    module.load_state_dict(state, strict=True)
    return module.to(device)
