"""Code sets and payment policy: ICD-10-CM from the CDC tabular, CMS tables from their files.

Both load lazily: importing this package costs nothing until a lookup is made.
"""

from __future__ import annotations

from fhir_adapter.codesets.icd10cm import excludes1_conflict, is_billable, is_valid, release
from fhir_adapter.codesets.tables import (
    MueRow,
    PaymentTables,
    PfsRow,
    PtpEdit,
    import_files,
    load_tables,
)

__all__ = [
    "MueRow",
    "PaymentTables",
    "PfsRow",
    "PtpEdit",
    "code_set_versions",
    "excludes1_conflict",
    "import_files",
    "is_billable",
    "is_valid",
    "load_tables",
    "release",
]


def code_set_versions() -> dict[str, object]:
    """The releases behind a report: ICD-10-CM tabular and the CMS table files in use."""
    return {"icd10cm": release(), "cms_tables": load_tables().release()}
