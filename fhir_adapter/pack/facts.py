"""The facts a rule may name (`fact:` in a pack) and the case collections each is read from.

Declared here, below the pack's schema, so the schema can check a pack's fact names without
importing the code that derives them (fhir_adapter.billing.facts, fhir_adapter.rules.facts);
those derivers register against this list, and rules.facts checks they cover it exactly.
"""

from __future__ import annotations

_DIAGNOSIS_SOURCES = ("reason_conditions", "conditions", "procedure")

# name -> the collections searched, shown as the "searched" evidence of a rule that finds
# nothing (and the references there that dangled): see rules.evaluate._absence
FACTS: dict[str, tuple[str, ...]] = {
    "place_of_service": ("encounter", "procedure", "locations"),
    "coverage": (),
    "provider": (),
    "earlier_same_session": (),
    "rendering_unclear": (),
    "other_patient": (),
    "patient": ("patient",),
    "date_of_service": ("procedure", "encounter"),
    "facility": (),
    "tumor_count": (),
    "tumor_max_size_cm": (),
    "units_exceeded": (),
    "guidance_conflict": (),
    "ptp_conflicts": (),
    "provider_npi": (),
    "global_period": (),
    "global_period_unknown": (),
    "diagnoses": _DIAGNOSIS_SOURCES,
    "principal_diagnosis": _DIAGNOSIS_SOURCES,
    "invalid_diagnoses": _DIAGNOSIS_SOURCES,
    "excludes1_pairs": _DIAGNOSIS_SOURCES,
    "modifier_conflicts": (),
    "text_truncated": (),
    "attachments_unread": ("documents", "reports"),
    "facility_npi": (),
    "uncoded_diagnoses": _DIAGNOSIS_SOURCES,
    "additional_code_notes": _DIAGNOSIS_SOURCES,
    "services_not_billed": ("session_procedures",),
    "documentation_conflicts": (),
    # what payer policies decide on (fhir_adapter.payers.facts; pack: facts.payer)
    "histology": _DIAGNOSIS_SOURCES,
    "tumor_sizes_cm": ("observations",),
    "tumor_total_diameter_cm": ("observations",),
    "extrahepatic_disease": _DIAGNOSIS_SOURCES,
    "child_pugh": ("observations",),
    "transplant_listed": _DIAGNOSIS_SOURCES,
    "portal_vein_occlusion": _DIAGNOSIS_SOURCES,
    "liver_share_pct": ("observations",),
    "not_resection_candidate": ("reason_conditions",),
    "resection_declined": (),
    "all_foci_treatable": (),
    "net_functioning": _DIAGNOSIS_SOURCES,
    "net_symptoms_after_systemic": (),
}
