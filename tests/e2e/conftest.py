"""Fixtures shared by the end-to-end tests. A module that needs another upstream (the sample
FHIR API) defines its own `upstream` fixture, which takes precedence."""
import threading

import pytest

import fapi_guard_py.envoy as envoy_runner
from harness import Upstream
from h2_tools import H2Upstream

import server as fhir_server  # tests/fhir_upstream/server.py (pytest.ini pythonpath)
from medplum_upstream import MedplumServer


@pytest.fixture(scope="module")
def upstream():
    """The echo API (answers 200 with what it received), one per test module."""
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def api():
    """The sample FHIR API (tests/fhir_upstream/server.py) with its two patients, one per test
    module; its port."""
    httpd = fhir_server.serve("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def recorder(api):
    """HTTP/2 upstream in front of the sample API: records what the API was asked."""
    u = H2Upstream(api)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def medplum():
    """A real FHIR server: Medplum's FHIR router over its in-memory repository
    (tests/fhir_upstream/medplum, tests/e2e/medplum_upstream.py), seeded with the same two
    patients, one per test module; `.port`, `.state(type, id)` reads it bypassing Envoy."""
    m = MedplumServer()
    yield m
    m.stop()


def pytest_sessionfinish(session, exitstatus):
    """No token or proof in any Envoy log of the whole run (docs/audit.md): every Envoy the
    tests started was scanned when it stopped (`fapi_guard_py.envoy.CREDENTIAL_LEAKS`)."""
    leaks = envoy_runner.CREDENTIAL_LEAKS
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"A compact JWS (token or proof) in {len(leaks)} Envoy log(s) of this run:", red=True)
            for path, start in leaks[:20]:
                reporter.write_line(f"  {path}: {start}...", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
