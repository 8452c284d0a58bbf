"""Where resources come from: files, NDJSON exports, FHIR servers."""

from fhir_adapter.sources.files import read_paths
from fhir_adapter.sources.store import ResourceStore

__all__ = ["ResourceStore", "read_paths"]
