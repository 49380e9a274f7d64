"""The FAPI guard's shared Python tooling, used by the benchmark (bench/run.py) and the tests
(tests/harness.py re-exports it for them). Installed editable into .venv by
scripts/bootstrap.sh (pyproject.toml), so nothing edits `sys.path`:

- `fapi_guard_py.envoy`: the filters' Wasm build, the Envoy binary, free loopback ports and
  `EnvoyProcess`, a real Envoy started from a bootstrap dict (envoy/render.py renders it).
- `fapi_guard_py.keys`: `Issuer` (keys and access tokens with joserfc, a JOSE library
  independent of ours) and hand-made JWS (`raw_jws`, `sign_es256`).
"""
from fapi_guard_py.envoy import (  # noqa: F401
    ROOT,
    WASM_DIR,
    EnvoyProcess,
    build_wasm,
    envoy_binary,
    free_port,
    validate_config,
    wait_port,
)
from fapi_guard_py.keys import Issuer, raw_jws, sign_es256  # noqa: F401
