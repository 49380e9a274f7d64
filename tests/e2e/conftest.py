"""Fixtures shared by the end-to-end tests. A module that needs another upstream (the sample
FHIR API) defines its own `upstream` fixture, which takes precedence."""
import pytest

from harness import Upstream


@pytest.fixture(scope="module")
def upstream():
    """The echo API (answers 200 with what it received), one per test module."""
    u = Upstream()
    yield u
    u.stop()
