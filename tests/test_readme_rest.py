"""README "REST API in 10 minutes", run as written: the policy copied and checked for Istio, the
user's own RS256 issuer key, JWKS, DPoP key and token (guard-issuer), the demo with them, then
the README's curl requests, each answered as its `# expect NNN` comment says. Fixed demo
ports: run alone, like tests/test_demo.py."""
import re
import shlex
import shutil
import subprocess

from harness import ROOT
from test_demo import running_demo


def section_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## REST API in 10 minutes\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def bash(script):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)


def test_rest_api_in_10_minutes_as_written(tmp_path):
    setup, keys, demo, requests = section_blocks()
    shutil.rmtree(ROOT / "run" / "rest", ignore_errors=True)
    r = bash(setup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no findings for --target istio" in r.stdout and "DRY RUN" in r.stdout, r.stdout
    r = bash(keys)
    assert r.returncode == 0, r.stdout + r.stderr
    (cmd,) = [line for line in demo.splitlines() if line.strip()]
    args = shlex.split(cmd)
    assert args[0] == "scripts/demo.sh", cmd
    with running_demo(args[1:], tmp_path / "demo.log"):
        r = bash(requests)
    expected = [int(x) for x in re.findall(r"# expect (\d{3})", requests)]
    # `curl -i` prints each status line right after the previous body (no newline between).
    got = [int(x) for x in re.findall(r"HTTP/1\.1 (\d{3}) ", r.stdout)]
    assert expected and got == expected, r.stdout[-3000:] + r.stderr[-2000:]
    assert "authz_binding" in r.stdout.split("HTTP/", 3)[2], r.stdout
