"""The router process integrates concurrency: requests held in flight grow its counter by N per second."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelplane.api.metrics import LoadReport
from modelplane.autoscaling.load import parse_router_page
from modelplane.testing.cluster import wait_for
from modelplane.testing.router import RouterProcess, write_routes

HELD = 4


class HoldingBackend:
    """A V2-looking HTTP backend that holds every inference until :meth:`release` (10 s at most)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        released = self.released

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                released.wait(10)
                body = json.dumps({"model_name": "held", "outputs": []}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def held_router(tmp_path: Path) -> Iterator[tuple[RouterProcess, HoldingBackend]]:
    backend = HoldingBackend()
    routes = write_routes(tmp_path / "routes.yaml", {"held": [{"version": "1", "http": backend.url}]})
    router = RouterProcess(log_path=tmp_path / "router.log", routes=routes)
    try:
        router.start()
        yield router, backend
    finally:
        backend.stop()
        router.stop()
        print(f"\n----- router log -----\n{router.log_tail()}")


def test_requests_held_in_flight_grow_the_concurrency_counter_by_their_number_per_second(
    held_router: tuple[RouterProcess, HoldingBackend],
) -> None:
    router, backend = held_router

    def page() -> LoadReport:
        return parse_router_page(router.metrics_text())

    def infer(_: int) -> int:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        return httpx.post(router.url + "/v2/models/held/infer", json=body, timeout=20).status_code

    with ThreadPoolExecutor(HELD) as pool:
        answers = pool.map(infer, range(HELD))
        wait_for(
            f"{HELD} requests in flight",
            lambda: router.metric("modelplane_router_in_flight_requests", model="held") == HELD,
            timeout=15,
        )
        first = page()
        threading.Event().wait(2.0)  # hold them about 2 s
        second = page()
        backend.release()
        assert list(answers) == [200] * HELD
    assert first.areas is not None
    assert second.areas is not None
    assert first.uptime is not None
    assert second.uptime is not None
    held_for = second.uptime - first.uptime
    assert held_for >= 1.9
    # All of them were in flight throughout, so the area grew by exactly HELD times the router's interval.
    assert second.areas["held"] - first.areas["held"] == pytest.approx(HELD * held_for, rel=1e-6)
    # Answered, they no longer count: the counter stops growing while the clock goes on.
    idle = page()
    assert idle.areas is not None
    idle_uptime = idle.uptime
    assert idle_uptime is not None
    later = wait_for(
        "the router's clock to move",
        lambda: (p := page()).uptime is not None and p.uptime > idle_uptime and p,
        timeout=5,
    )
    assert later.areas == pytest.approx(idle.areas)


def test_sigterm_reports_not_ready_keeps_answering_for_the_delay_then_drains(tmp_path: Path) -> None:
    backend = HoldingBackend()
    routes = write_routes(tmp_path / "routes.yaml", {"held": [{"version": "1", "http": backend.url}]})
    router = RouterProcess(
        log_path=tmp_path / "router.log",
        routes=routes,
        extra_args=["--drain-delay", "5", "--drain-timeout", "10"],
    )
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    try:
        router.start()
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                lambda: httpx.post(router.url + "/v2/models/held/infer", json=body, timeout=20)
            )
            wait_for(
                "a request in flight",
                lambda: router.metric("modelplane_router_in_flight_requests", model="held") == 1,
                timeout=15,
            )
            assert router.process is not None
            router.process.send_signal(signal.SIGTERM)
            # Lame duck: not ready, so the endpoint leaves the Service, but still answering.
            wait_for("/readyz to report 503", lambda: httpx.get(router.url + "/readyz").status_code == 503, 5)
            backend.release()
            assert held.result(timeout=20).status_code == 200
            late = httpx.post(router.url + "/v2/models/held/infer", json=body, timeout=20)
            assert late.status_code == 200
            assert late.headers["connection"] == "close"  # the client reconnects elsewhere
        assert router.process.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(router.url + "/readyz", timeout=2)
    finally:
        backend.stop()
        router.stop()
        print(f"\n----- router log -----\n{router.log_tail()}")
