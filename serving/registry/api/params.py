"""Path parameters, each with the same pattern in the OpenAPI document as in the checks behind it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from modelplane.registry_client import validation

ModelNamePath = Annotated[
    str,
    Path(min_length=1, max_length=128, pattern=validation.MODEL_NAME_PATTERN, description="Model name"),
    AfterValidator(validation.check_model_name),
]
VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number")]
AliasPath = Annotated[str, Path(min_length=1, max_length=64, pattern=validation.ALIAS_PATTERN)]
TagKeyPath = Annotated[
    str,
    Path(min_length=1, max_length=128, pattern=validation.TAG_KEY_PATTERN),
    AfterValidator(validation.check_tag_key),
]
K8sNamePath = Annotated[str, Path(min_length=1, max_length=253, pattern=validation.K8S_NAME_PATTERN)]
IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
