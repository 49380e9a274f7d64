"""The explainer page (web/, built by scripts/build-web.sh) in a real headless Chromium
(Debian `chromium` + `chromium-driver`, driven by selenium): load it, fill the fields, and
check the rendered trace for one allowed and several denied requests, bad input (malformed
policy, garbage token, a 5 MB paste) answered with a message while the page stays usable,
and that it still works with the network cut. Tokens and proofs come from joserfc.

FAPI_GUARD_SCREENSHOT=1 also writes docs/web-explainer.png (the README's screenshot).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from harness import ROOT, Issuer

DIST = ROOT / "web" / "dist"
AUD = "web-e2e"
AUTHORITY = "127.0.0.1:10000"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def site():
    if not (DIST / "pkg" / "fapi_guard_web_bg.wasm").exists():
        subprocess.run(["bash", "scripts/build-web.sh"], cwd=ROOT, check=True, timeout=1800)
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(DIST))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    driver.set_page_load_timeout(60)
    driver.get(site)
    deadline = time.time() + 60
    while driver.execute_script("return document.body.dataset.ready") != "1":
        assert time.time() < deadline, driver.find_element("id", "error").text
        time.sleep(0.2)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def policy(issuer) -> str:
    return json.dumps({
        "api": {"name": "web-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": {"base_path": "/fhir", "resource_types": ["Patient", "Observation"]},
    }, indent=1)


class Proofs:
    def __init__(self):
        self.key = ECKey.generate_key("P-256")
        self.jkt = self.key.thumbprint()

    def proof(self, htu: str, token: str, htm="GET") -> str:
        c = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time()),
             "ath": b64(hashlib.sha256(token.encode()).digest())}
        h = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        return jws.serialize_compact(h, json.dumps(c).encode(), self.key, algorithms=["ES256"])


def fill(driver, **fields):
    # Values go in through JS (a 5 MB send_keys would take minutes), then an input event.
    for k, v in fields.items():
        driver.execute_script(
            "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('input'));", k.replace("_", "-"), v)


def explain(driver) -> dict:
    driver.find_element("id", "explain").click()
    a = driver.find_element("id", "answer")
    steps = [[td.text for td in tr.find_elements("tag name", "td")] for tr in
             driver.find_element("id", "steps").find_elements("tag name", "tr")]
    return {"status": a.get_attribute("data-status"), "reason": a.get_attribute("data-reason"), "text": a.text,
            "error": driver.find_element("id", "error").text, "steps": steps,
            "curl": driver.find_element("id", "curl").text}


def test_allowed_and_denied_requests_render_the_trace(browser, issuer):
    p = Proofs()
    tok = issuer.token(aud=AUD, scope="patient/*.rs", patient="pat-anna", cnf={"jkt": p.jkt})
    base = f"http://{AUTHORITY}"
    fill(browser, policy=policy(issuer), authority=AUTHORITY, now="", jwks="", response="", filters="")

    path = "/fhir/Patient/pat-anna"
    fill(browser, request=f"GET {path}",
         headers=f"Authorization: DPoP {tok}\nDPoP: {p.proof(base + path, tok)}")
    r = explain(browser)
    assert r["status"] == "forwarded", r
    assert all(s[0] == "pass" for s in r["steps"]), r["steps"]
    assert [s[1] for s in r["steps"]][-1] == "fhir_scope"
    assert r["curl"].startswith("curl -i") and f"'{base}{path}'" in r["curl"]

    fill(browser, headers="")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("401", "missing_token"), r
    assert 'DPoP algs="PS256 ES256 EdDSA"' in r["text"]

    other = "/fhir/Patient/pat-bjorn"
    fill(browser, request=f"GET {other}", headers=f"Authorization: DPoP {tok}\nDPoP: {p.proof(base + other, tok)}")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("403", "compartment_escape"), r
    assert ["fail", "fhir_scope"] == r["steps"][-1][:2]

    fill(browser, request=f"GET {path}",
         headers=f"Authorization: DPoP {tok}\nDPoP: {p.proof('https://elsewhere.example/x', tok)}")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("401", "dpop_htu_mismatch"), r
    assert f"expected htu `{base}{path}`" in r["text"]
    if os.environ.get("FAPI_GUARD_SCREENSHOT"):
        browser.set_window_size(1400, 1250)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ROOT / "docs" / "web-explainer.png"))

    old = issuer.token(aud=AUD, patient="pat-anna", exp=int(time.time()) - 600, cnf={"jkt": p.jkt})
    fill(browser, headers=f"Authorization: DPoP {old}\nDPoP: {p.proof(base + path, old)}")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("401", "expired"), r
    assert "before the proxy clock" in r["text"]
    assert old not in r["text"]
    assert "NOT verified" in browser.find_element("id", "decoded").text


def test_bad_input_gets_a_message_and_the_page_stays_usable(browser, issuer):
    fill(browser, policy='{"api": {"name": "x"}, "issuers": []', request="GET /fhir/Patient/pat-anna", headers="")
    r = explain(browser)
    assert "refused by the filters' loader" in r["error"], r

    fill(browser, policy=policy(issuer), headers="Authorization: DPoP ☃☃☃.garbage")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("401", "malformed_token"), r

    fill(browser, headers="this line has no colon")
    assert "headers, line 1" in explain(browser)["error"]

    fill(browser, response="x" * (5 * 1024 * 1024), headers="")
    r = explain(browser)
    assert "more than this page reads" in r["error"], r
    fill(browser, response="")
    r = explain(browser)
    assert (r["status"], r["reason"]) == ("401", "missing_token"), r

    fill(browser, request="fetch me everything")
    assert "HTTP method" in explain(browser)["error"]


def test_works_offline(browser, issuer):
    browser.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    try:
        fill(browser, policy=policy(issuer), request="GET /fhir/Patient/pat-anna", headers="")
        r = explain(browser)
        assert (r["status"], r["reason"]) == ("401", "missing_token"), r
        assert "offline" in browser.find_element("id", "offline").text.lower()
    finally:
        browser.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)


def test_check_policy_lists_lints_and_meaning(browser, issuer):
    fill(browser, policy=(ROOT / "policies" / "demo-fhir-api.json").read_text(), target="istio")
    browser.find_element("id", "check").click()
    text = browser.find_element("id", "description").text
    assert "hold_headers_while_buffering" in text and "FHIR API under `/fhir`" in text, text


def test_personal_identifiers_are_redacted_unless_the_box_is_ticked(browser, issuer):
    """The decoded token on the page hides the national identity number, names and the HPR
    number (docs/helseid.md, "The explainer and personal data"); the box shows them. The answer
    is the same either way: only the display is redacted."""
    tok = issuer.token(aud=AUD, scope="patient/*.rs", patient="pat-anna",
                       **{"helseid://claims/identity/pid": "12345678901", "given_name": "Kari",
                          "helseid://claims/hpr/hpr_number": "565501872"})
    fill(browser, policy=policy(issuer), authority=AUTHORITY, now="", jwks="", response="", filters="",
         request="GET /fhir/Patient/pat-anna", headers=f"Authorization: DPoP {tok}")
    box = browser.find_element("id", "show-personal")
    assert not box.is_selected()
    hidden = explain(browser)
    decoded = browser.find_element("id", "decoded").text
    for secret in ("12345678901", "Kari", "565501872"):
        assert secret not in decoded and secret not in hidden["text"], secret
    assert "redacted" in decoded and "helseid://claims/identity/pid" in decoded
    box.click()
    try:
        shown = explain(browser)
        decoded = browser.find_element("id", "decoded").text
        for secret in ("12345678901", "Kari", "565501872"):
            assert secret in decoded, secret
        assert (shown["status"], shown["reason"]) == (hidden["status"], hidden["reason"])
    finally:
        box.click()
