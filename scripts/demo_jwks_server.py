"""The demo's local JWKS endpoint: answers GET on every path (whatever path the policy's
`jwks_uri` names) with one JWKS file. Plain HTTP on loopback; Envoy reaches it for every
`jwks_cluster` (envoy/render.py --jwks-address 127.0.0.1:PORT --jwks-plain).

    python scripts/demo_jwks_server.py --port 8082 --file run/demo/jwks.json
"""
import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8082)
    ap.add_argument("--file", required=True)
    a = ap.parse_args()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            with open(a.file, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stderr.write(f"jwks {self.command} {self.path}\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", a.port), H)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
