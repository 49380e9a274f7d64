"""HTTP/2 and chunked-trailer clients and an HTTP/2 upstream for the end-to-end tests, built on
the PyPI `h2` library (independent of Envoy's codecs) and raw sockets.

- `h2_request()`: one request over HTTP/2, h2c with prior knowledge or h2 over TLS (ALPN),
  optionally ending with a trailers frame instead of END_STREAM on DATA.
- `h1_chunked_request()`: one HTTP/1.1 request with a chunked body and a trailer section.
- `H2Upstream`: an HTTP/2 (prior knowledge) server in front of an HTTP/1.1 API (the sample
  FHIR server): every answer with a body ends with a trailers frame.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host"}


@dataclass
class Answer:
    status: int  # 0: the stream was reset (or the connection closed) before any response headers
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    trailers: dict = field(default_factory=dict)
    reset: bool = False

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _pairs(hs):
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in hs}


def h2_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"",
               trailers: dict | None = None, tls: ssl.SSLContext | None = None, timeout: float = 10.0,
               chunk: int = 700) -> Answer:
    """Sends one request on a new HTTP/2 connection to 127.0.0.1:`port`. With `trailers` the
    request ends with a trailers HEADERS frame (END_STREAM), after the body in DATA frames
    of at most `chunk` bytes without END_STREAM."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = raw
    if tls is not None:
        sock = tls.wrap_socket(raw, server_hostname="localhost")
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", "https" if tls else "http"),
              (":authority", f"127.0.0.1:{port}")]
        hs += [(k.lower(), v) for k, v in (headers or {}).items()]
        conn.send_headers(sid, hs, end_stream=not body and not trailers)
        sock.sendall(conn.data_to_send())
        ans = Answer(status=0)
        done = False

        def pump():
            """Reads once and handles the events; True when the stream is over."""
            data = sock.recv(65536)
            if not data:
                ans.reset = True
                return True
            over = False
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    ans.headers = _pairs(ev.headers)
                    ans.status = int(ans.headers.get(":status", "0"))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    ans.body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    ans.trailers = _pairs(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    over = True
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    ans.reset = over = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            return over

        i = 0
        while i < len(body) and not done:
            n = min(chunk, len(body) - i, conn.local_flow_control_window(sid))
            if n <= 0:
                done = pump()  # wait for WINDOW_UPDATE (or an early answer)
                continue
            last = i + n >= len(body)
            conn.send_data(sid, body[i:i + n], end_stream=last and not trailers)
            sock.sendall(conn.data_to_send())
            i += n
        if trailers and not done:
            conn.send_headers(sid, [(k.lower(), v) for k, v in trailers.items()], end_stream=True)
            sock.sendall(conn.data_to_send())
        for _ in range(10000):
            if done:
                return ans
            done = pump()
        raise AssertionError("no end of stream")
    finally:
        sock.close()


def h1_chunked_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"",
                       trailers: dict | None = None, timeout: float = 10.0, chunk: int = 700) -> Answer:
    """One HTTP/1.1 request with `Transfer-Encoding: chunked` and a trailer section
    (RFC 9112 §7.1.2), written on a raw socket."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked",
             "Connection: close"]
    if trailers:
        lines.append("Trailer: " + ", ".join(trailers))
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    out = ("\r\n".join(lines) + "\r\n\r\n").encode()
    for i in range(0, len(body), chunk):
        part = body[i:i + chunk]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    out += b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in (trailers or {}).items()).encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(out)
        r = http.client.HTTPResponse(s, method=method)
        try:
            r.begin()
            data = r.read()
        except (http.client.HTTPException, ConnectionError):
            return Answer(status=0, reset=True)
        return Answer(status=r.status, headers={k.lower(): v for k, v in r.getheaders()}, body=data)


class H2Upstream:
    """An HTTP/2 API (prior knowledge, as an Envoy cluster with `http2_protocol_options`
    speaks it) that forwards each request to the HTTP/1.1 API on `backend_port` and sends
    its answer back, ending every answer that has a body with a trailers frame
    (`x-upstream-trailer: 1`). `requests` records (method, path, headers) of what it got."""

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.requests: list[tuple[str, str, dict]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stop = True
        self.sock.close()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _forward(self, headers: dict, body: bytes):
        method, path = headers[":method"], headers[":path"]
        self.requests.append((method, path, headers))
        fwd = {k: v for k, v in headers.items() if not k.startswith(":") and k not in HOP}
        fwd["host"] = headers.get(":authority", "api")
        fwd["content-length"] = str(len(body))
        c = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=10)
        try:
            c.request(method, path, body=body, headers=fwd)
            r = c.getresponse()
            data = r.read()
            return r.status, [(k.lower(), v) for k, v in r.getheaders() if k.lower() not in HOP
                              and k.lower() != "content-length"], data
        finally:
            c.close()

    def _serve(self, c: socket.socket):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        streams: dict[int, list] = {}
        try:
            c.sendall(conn.data_to_send())
            while not self._stop:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = [_pairs(ev.headers), b""]
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id][1] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hs, body = streams.pop(ev.stream_id)
                        status, rhs, rbody = self._forward(hs, body)
                        conn.send_headers(ev.stream_id, [(":status", str(status))] + rhs, end_stream=not rbody)
                        if rbody:
                            for i in range(0, len(rbody), 8192):
                                conn.send_data(ev.stream_id, rbody[i:i + 8192])
                            conn.send_headers(ev.stream_id, [("x-upstream-trailer", "1")], end_stream=True)
                    elif isinstance(ev, h2.events.StreamReset):
                        streams.pop(ev.stream_id, None)
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except (OSError, KeyError, h2.exceptions.H2Error):
            return
        finally:
            c.close()
