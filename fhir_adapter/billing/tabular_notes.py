"""The tabular's "use additional code" and "code also" notes of a code and its ancestors,
as simple-icd-10-cm gives them: from the cached ICD-10-CM index (billing.icd10cm), and
from the package itself only for a code not written as it names codes (importing it
parses the whole tabular: seconds, once per process)."""

from __future__ import annotations

import functools
import warnings

from fhir_adapter.billing import icd10cm


@functools.lru_cache(maxsize=4096)
def additional_code_notes(code: str) -> tuple[str, ...]:
    """The notes of `code` (dotted) and of each ancestor category, nearest first."""
    found = icd10cm.additional_notes(code)
    return found if found is not None else package_notes(code)


def package_notes(code: str) -> tuple[str, ...]:
    """The same, from the package itself (the index is held to it on every code)."""
    with warnings.catch_warnings():  # its loader uses importlib.resources' legacy API
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as cm  # type: ignore[import-untyped]

    if not cm.is_valid_item(code):
        return ()
    out: list[str] = []
    for node in [code, *cm.get_ancestors(code)]:
        for text in (cm.get_use_additional_code(node), cm.get_code_also(node)):
            cleaned = " ".join(str(text or "").split())
            if cleaned and cleaned not in out:
                out.append(cleaned)
    return tuple(out)
