"""The README's first command: scripts/demo.sh starts the filters in front of the sample
FHIR API and prints ready-to-paste requests. This runs it and pastes them."""
import os
import re
import signal
import subprocess
import time

import pytest

from harness import ROOT

EXPECTED = [200, 401, 403, 403, 401]  # the printed curl -i requests, in order


@pytest.fixture(scope="module")
def demo():
    (ROOT / "run").mkdir(exist_ok=True)
    log = open(ROOT / "run" / "demo-test.log", "w")
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
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


def test_printed_requests_get_the_promised_answers(demo):
    cmds = printed_commands(demo)
    statuses = []
    for cmd in cmds:
        if not cmd.startswith("curl -i"):
            continue
        r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=30)
        m = re.match(r"HTTP/1.1 (\d+)", r.stdout)
        assert m, (cmd, r.stdout, r.stderr)
        statuses.append(int(m.group(1)))
    assert statuses == EXPECTED, statuses
    meta = [c for c in cmds if "/metadata" in c][0]
    r = subprocess.run(["bash", "-c", meta], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "CapabilityStatement" in r.stdout
