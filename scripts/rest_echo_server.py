#!/usr/bin/env python3
"""The demo's sample REST API for a policy without a `fhir` section: a small JSON echo API.

Python 3 stdlib only:  python3 scripts/rest_echo_server.py --port 8080 --policy my-api.json

Answers every method under the policy's `routes[]` paths (a `{name}` template segment
stands for any one segment; a prefix covers the paths below it) with 200 and a JSON echo of
what reached it: method, path, query, the body's length and Content-Type. Any other path
gets 404 with a JSON error, as a REST API that does not serve it would. No auth of its own:
the guard in front does that. It logs only method and path (never headers: they hold tokens).
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def served_prefixes(policy):
    """The `routes[]` path prefixes, as lists of segments (`None` = a `{name}` template)."""
    out = []
    for r in policy.get("routes") or []:
        prefix = r.get("path_prefix") or r.get("path")
        if isinstance(prefix, str):
            out.append([None if s.startswith("{") else s for s in prefix.strip("/").split("/") if s])
    return out


def serves(prefixes, path):
    segs = [s for s in path.strip("/").split("/") if s]
    return any(len(segs) >= len(p) and all(a is None or a == b for a, b in zip(p, segs)) for p in prefixes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--policy", required=True)
    a = ap.parse_args(argv)
    with open(a.policy, encoding="utf-8") as f:
        prefixes = served_prefixes(json.load(f))

    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            if serves(prefixes, parts.path):
                status, doc = 200, {"method": self.command, "path": parts.path, "query": parts.query,
                                    "body_bytes": len(body), "content_type": self.headers.get("content-type")}
            else:
                status, doc = 404, {"error": "not_found", "path": parts.path}
            out = json.dumps(doc).encode() if self.command != "HEAD" else b""
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out) if self.command != "HEAD" else len(json.dumps(doc))))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = answer

        def log_message(self, fmt, *args):
            sys.stderr.write(f"rest {self.command} {urlsplit(self.path).path}\n")

    server = ThreadingHTTPServer((a.host, a.port), Echo)
    print(f"REST echo API on http://{a.host}:{a.port} serving {len(prefixes)} route prefix(es)", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
