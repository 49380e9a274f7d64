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


# The two ways to attach the filters (envoy/render.py): three modules, one VM each
# (`modules`), or the one module `fapi_guard.wasm` with one VM for the three (`one_module`).
# A test marked `one_module` runs with both, so the one module is checked to give the same
# answers (`pytest -m one_module` runs that subset); other tests run with `modules` only.
LAYOUTS = {"modules": {}, "one_module": {"one_module": True}}


def pytest_generate_tests(metafunc):
    if "layout" in metafunc.fixturenames and metafunc.definition.get_closest_marker("one_module"):
        metafunc.parametrize("layout", list(LAYOUTS), indirect=True, scope="module")


@pytest.fixture(scope="module")
def layout(request):
    """`Envoy(...)` keyword arguments for the layout this test runs with (`**layout`)."""
    return LAYOUTS[getattr(request, "param", "modules")]
