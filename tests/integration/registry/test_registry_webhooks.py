"""Webhooks delivered to a real local HTTP receiver: signed, retried with back-off, logged."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelplane.local.processes import free_port
from modelplane.serving.registry.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from modelplane.testing.registry import RegistryProcess

SECRET = "receiver-secret-0123456789"


@dataclass
class Receiver:
    fail_first: int
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    failures_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(fail_first=2)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                if state.failures_sent < state.fail_first:
                    state.failures_sent += 1
                    status = 500
                else:
                    state.received.append((dict(self.headers.items()), body))
                    status = 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def wait_until(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_events_are_signed_retried_and_logged(registry: RegistryProcess, receiver: Receiver) -> None:
    with registry.client() as admin:
        hook = admin.create_webhook(
            f"http://127.0.0.1:{receiver.port}/hooks",
            ["version.created", "version.ready", "alias.moved"],
            secret=SECRET,
        )
        assert hook.secret == SECRET
        admin.create_model("hooked")
        v = admin.create_version("hooked", source="s3://bucket/hooked/1")
        admin.update_version("hooked", v.version, status="READY")
        admin.set_alias("hooked", "production", v.version)

        assert wait_until(lambda: len(receiver.received) >= 3), (receiver.received, registry.log_tail())
        events = []
        for headers, body in receiver.received:
            assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
            assert not verify_signature(
                "wrong-secret-0123456789", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]
            )
            payload = json.loads(body)
            assert payload["event"] == headers[EVENT_HEADER]
            events.append((payload["event"], payload["model"]))
        assert sorted(events) == sorted(
            [("version.created", "hooked"), ("version.ready", "hooked"), ("alias.moved", "hooked")]
        )
        alias_event = next(
            json.loads(b) for _, b in receiver.received if json.loads(b)["event"] == "alias.moved"
        )
        assert (alias_event["from_version"], alias_event["to_version"]) == (None, 1)

        assert wait_until(lambda: all(d.status == "delivered" for d in admin.list_deliveries(hook.id)))
        deliveries = admin.list_deliveries(hook.id)
        assert len(deliveries) == 3
        assert sum(d.attempts for d in deliveries) == 3 + receiver.fail_first
        retried = [d for d in deliveries if d.attempts > 1]
        assert retried
        assert all(d.last_status_code == 204 for d in deliveries)


def test_unreachable_receiver_gives_up_after_max_attempts(registry: RegistryProcess) -> None:
    with registry.client() as admin:
        # A port just freed on loopback: nothing listens, every attempt is refused.
        hook = admin.create_webhook(f"http://127.0.0.1:{free_port()}/nothing", ["version.created"])
        admin.create_model("unheard")
        admin.create_version("unheard")
        assert wait_until(
            lambda: [d.status for d in admin.list_deliveries(hook.id)] == ["failed"], timeout=60
        )
        (delivery,) = admin.list_deliveries(hook.id)
        assert delivery.attempts == 5
        assert delivery.last_error
        assert delivery.delivered_at is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://0.0.0.0/x",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/x",
        "http:///x",
    ],
)
def test_dangerous_destinations_are_refused(registry: RegistryProcess, url: str) -> None:
    with registry.http() as http:
        before = http.get("/api/v1/webhooks").json()
        r = http.post("/api/v1/webhooks", json={"url": url, "events": ["alias.moved"]})
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert http.get("/api/v1/webhooks").json() == before
