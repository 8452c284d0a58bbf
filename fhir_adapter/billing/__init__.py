"""What goes on the Claim: code sets, CMS tables, the billing decisions and the facts rules
test about them.

- icd10cm, tables: ICD-10-CM from the CDC tabular, CMS payment tables from their files
  (both load lazily: importing this package costs nothing until a lookup is made);
- decide: the diagnoses, guidance line, NCCI edits, providers and facility of the Claim;
- modifiers: which modifiers the procedure line carries;
- facts: those decisions as facts a rule pack's rules can name.

It reads the compiled pack (fhir_adapter.pack) and the case; rules and write-back read it.
"""

from __future__ import annotations

from fhir_adapter.billing.icd10cm import excludes1_conflict, is_billable, is_valid, release
from fhir_adapter.billing.tables import (
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
