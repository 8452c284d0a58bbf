"""A CDS Hooks 2.0 service: the same rule pack and engine as `evaluate`, inside the EHR workflow.

`order-sign` / `order-select` / `appointment-book` warn before a 47382 order is
signed about what would block the claim later; `encounter-discharge` runs the full
evaluation and offers the Claim. `create_app` builds the ASGI app (Starlette);
`fhir-adapter serve` runs it under uvicorn.
"""

from __future__ import annotations

from fhir_adapter.hooks.app import HookConfig, create_app

__all__ = ["HookConfig", "create_app"]
