"""Test tooling (synthetic exports, the fixture catalog, the pytest plugin, CDS Hooks calls).

Never imported by the adapter itself, so `import fhir_adapter` loads none of it.
"""
