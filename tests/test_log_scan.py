"""The whole-run check that no Envoy log holds a token or a proof (tests/e2e/conftest.py
`pytest_sessionfinish`): the scanner finds a compact JWS wherever it is in a log line, and a
stopped Envoy's log is scanned."""
import fapi_guard_py.envoy as envoy_runner
from fapi_guard_py import Issuer


def test_a_token_in_a_log_line_is_found():
    token = Issuer("https://issuer.test").token(aud="a")
    line = f"[info][wasm] something Authorization: DPoP {token} more\n"
    assert envoy_runner.credentials_in(line) == [token[:12]]
    assert envoy_runner.credentials_in("[info][wasm] fapi_guard.token: denied reason=expired status=401") == []


def test_a_stopped_envoys_log_is_scanned(tmp_path):
    token = Issuer("https://issuer.test").token(aud="a")
    # An EnvoyProcess whose log holds a token, stopped (no real Envoy: the process is `true`).
    e = envoy_runner.EnvoyProcess.__new__(envoy_runner.EnvoyProcess)
    e.log_path = tmp_path / "envoy.log"
    e.log_path.write_text(f"request headers: authorization: Bearer {token}\n")
    e._log = open(tmp_path / "other", "wb")

    class Done:
        def poll(self):
            return 0

    e.proc = Done()
    before = len(envoy_runner.CREDENTIAL_LEAKS)
    e.stop()
    assert envoy_runner.CREDENTIAL_LEAKS[before:] == [(str(e.log_path), token[:12])]
    del envoy_runner.CREDENTIAL_LEAKS[before:]
