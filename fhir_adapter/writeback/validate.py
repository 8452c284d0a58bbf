"""Validate what we write against the fhir.resources R4B models.

Kept off the hot path: the tests prove every fixture and finding code produces
valid resources, and `--validate` lets a user re-check on their own data.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from fhir_adapter.errors import OutputInvalid

_MODULES = {
    "Bundle": "bundle",
    "Claim": "claim",
    "DetectedIssue": "detectedissue",
}


def validate_resource(resource: dict[str, Any]) -> None:
    rtype = resource.get("resourceType", "")
    module_name = _MODULES.get(rtype)
    if module_name is None:
        raise OutputInvalid(f"no R4B model configured for {rtype!r}")
    module = importlib.import_module(f"fhir.resources.R4B.{module_name}")
    model = getattr(module, rtype)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise OutputInvalid(f"{rtype} is not valid FHIR R4: {exc}") from None
