"""pytest plugin: the bundled 47382 fixtures as a parametrized fixture for other projects.

Registered through the `pytest11` entry point but inert unless a test asks for
`fhir_adapter_case`: then that test runs once per fixture case, receiving the
Bundle and its expected outcome.

    def test_my_pipeline(fhir_adapter_case):
        result = my_pipeline(fhir_adapter_case.bundle())
        assert result.outcome == fhir_adapter_case.expected[0]["outcome"]
"""

from __future__ import annotations

import pytest

from fhir_adapter.testing.catalog import FixtureCase, list_fixtures


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fhir_adapter_case" in metafunc.fixturenames:
        cases = list_fixtures()
        metafunc.parametrize("fhir_adapter_case", cases, ids=[c.name for c in cases], indirect=True)


@pytest.fixture
def fhir_adapter_case(request: pytest.FixtureRequest) -> FixtureCase:
    case: FixtureCase = request.param
    return case
