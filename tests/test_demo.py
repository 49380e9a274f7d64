"""The README's first command: scripts/demo.sh starts the filters in front of the sample
FHIR API and prints ready-to-paste requests. This runs it and pastes them; then the same
for `scripts/demo.sh --gateway` (the two-proxy topology). Both use the same ports, so one
run is stopped before the next starts."""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from harness import ROOT

EXPECTED = [200, 401, 403, 403, 401]  # the printed curl -i requests, in order
# scripts/demo.sh --gateway: allowed with the client certificate, no certificate, other patient,
# other patient's Observation, proof for the internal URI.
EXPECTED_GATEWAY = [200, 401, 403, 403, 401]
DEMO_PORTS = (10000, 9901, 8080, 8082, 8443, 9902)


def wait_ports_free(timeout=30.0):
    """The next demo run binds the same ports: wait until the previous one let them go."""
    deadline = time.time() + timeout
    busy = list(DEMO_PORTS)
    while busy and time.time() < deadline:
        busy = []
        for port in DEMO_PORTS:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(port)
        if busy:
            time.sleep(0.2)
    assert not busy, f"demo ports still in use: {busy}"


@contextlib.contextmanager
def running_demo(args, log_path):
    """Runs `scripts/demo.sh ARGS` until it prints "Press Ctrl-C"; yields what it printed;
    stops it (the whole process group) and waits until its ports are free again."""
    wait_ports_free()
    log = open(log_path, "w")
    proc = subprocess.Popen(["bash", "scripts/demo.sh", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
                            text=True, start_new_session=True)
    out = []
    deadline = time.time() + 600
    try:
        for line in proc.stdout:
            out.append(line)
            if "Press Ctrl-C" in line or time.time() > deadline:
                break
        assert any("Press Ctrl-C" in line for line in out), "".join(out)[-3000:]
        yield "".join(out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        wait_ports_free()


@pytest.fixture(scope="module")
def demo(request):
    """The demo's printed text, for `request.param` = its arguments. Module scope with an
    indirect parameter: pytest stops one run before it starts the next (same ports)."""
    args = list(request.param)
    (ROOT / "run").mkdir(exist_ok=True)
    with running_demo(args, ROOT / "run" / f"demo-test{'-'.join([''] + [a.strip('-') for a in args])}.log") as text:
        yield text


def printed_commands(text):
    """The curl commands as printed (continuation lines joined)."""
    cmds, cur = [], ""
    for line in text.splitlines():
        if line.startswith("curl ") or cur:
            cur += line.rstrip("\\").rstrip() + " "
            if not line.endswith("\\"):
                cmds.append(cur.strip())
                cur = ""
    return cmds


def run_printed(cmds):
    statuses = []
    for cmd in cmds:
        if not cmd.startswith("curl -i"):
            continue
        r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=30)
        m = re.match(r"HTTP/[\d.]+ (\d+)", r.stdout)
        assert m, (cmd, r.stdout, r.stderr)
        statuses.append((int(m.group(1)), r.stdout))
    return statuses


def reason_of(response_text):
    """The OperationOutcome reason code in a `curl -i` output."""
    body = re.split(r"\r?\n\r?\n", response_text, maxsplit=1)[-1]
    return json.loads(body)["issue"][0]["details"]["coding"][0]["code"]


@pytest.mark.parametrize("demo", [()], indirect=True, ids=["sidecar"])
def test_printed_requests_get_the_promised_answers(demo):
    cmds = printed_commands(demo)
    statuses = [s for s, _ in run_printed(cmds)]
    assert statuses == EXPECTED, statuses
    meta = [c for c in cmds if "/metadata" in c][0]
    r = subprocess.run(["bash", "-c", meta], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "CapabilityStatement" in r.stdout


@pytest.mark.parametrize("demo", [("--gateway",)], indirect=True, ids=["gateway"])
def test_gateway_printed_requests_get_the_promised_answers(demo):
    """scripts/demo.sh --gateway: the committed two-proxy topology (envoy/gateway-edge.yaml in
    front of the sidecar with policies/demo-fhir-api-gateway.json), requests through the gateway."""
    cmds = printed_commands(demo)
    assert cmds and all("https://127.0.0.1:8443/api/fhir/" in c for c in cmds), cmds
    results = run_printed(cmds)
    assert [s for s, _ in results] == EXPECTED_GATEWAY, [s for s, _ in results]
    reasons = [reason_of(out) if status != 200 else None for status, out in results]
    assert reasons == [None, "mtls_cert_missing", "compartment_escape", "response_outside_grant",
                       "dpop_htu_mismatch"], reasons
    assert '"id": "pat-anna"' in results[0][1] or '"id":"pat-anna"' in results[0][1]
    meta = [c for c in cmds if "/metadata" in c][0]
    r = subprocess.run(["bash", "-c", meta], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "CapabilityStatement" in r.stdout
