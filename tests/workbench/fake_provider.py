"""A provider's HTTP API faked by a real local HTTP server in a thread, and signed webhook bodies.

The server records every request (method, path, headers, JSON body) and answers from a script
of (status, JSON) pairs, then with the default answer; tests point META_GRAPH_BASE_URL and
X_API_BASE_URL at it and check the request shape the connector sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def corpus(name: str) -> dict:
    """A payload of the corpus, e.g. corpus("meta/messenger_text.json")."""
    return json.loads((CORPUS / name).read_text())


def body_of(payload) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def meta_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def x_signature(secret: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(mac).decode()


def closed_port() -> int:
    """A local port nobody listens on (a provider that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    json: dict | None


@dataclass
class FakeProvider:
    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    script: list[tuple[int, dict]] = field(default_factory=list)
    default: tuple[int, dict] = (200, {})

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, *responses: tuple[int, dict]) -> None:
        self.script.extend(responses)


def start_fake_provider() -> FakeProvider:
    fake: FakeProvider

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            fake.requests.append(
                Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, parsed)
            )
            status, answer = fake.script.pop(0) if fake.script else fake.default
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeProvider(server=server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake
