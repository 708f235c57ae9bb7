"""``modelplane up``: registry, router and supervisor on one machine, started and stopped in order.

Start: take the data directory (one stack per directory), bind the router's ports (a port in use
is reported with the flag that changes it), start the registry as a child process, register the
demo models on first run (``demo``, a classifier, and ``demo-chat``, a small language model trained
on the docs: half a minute, once), then run the router and the supervisor on this process's
event loop.
Stop (Ctrl-C or SIGTERM): the router stops taking requests and drains, the runtimes drain and
stop, the registry stops; nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax

from modelplane.local.demo import DEMO_NAME, ensure_demo, write_demo_deployment
from modelplane.local.demo_chat import DEMO_CHAT_NAME, ensure_demo_chat, write_demo_chat_deployment
from modelplane.local.discovery import PushedDiscovery
from modelplane.local.layout import AlreadyRunningError, DataDir, read_json, write_json
from modelplane.local.processes import free_port, modelplane_command, spawn, terminate
from modelplane.local.supervisor import Supervisor
from modelplane.local.usage import chat_curl_command, curl_command, openai_snippet, tritonclient_snippet
from modelplane.local.view import plain_lines, status_view
from modelplane.registry_client.client import RegistryClient
from modelplane.resolution.registry import RegistryResolver
from modelplane.serving.router.server import Router, RouterSettings

log = logging.getLogger("modelplane.up")

READY_LINE = "Modelplane is ready."
STOP_HINT = "Stop with Ctrl-C."  # the last line of what is printed once ready
CHAT_HINT = "Try the chat model (OpenAI API, streamed):"


class StackError(RuntimeError):
    """The stack cannot start; the message says what to do."""


class _InterruptedError(Exception):
    """Ctrl-C or SIGTERM during the demo's training: stop training, start nothing."""


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path
    http_port: int = 8080
    grpc_port: int = 8081
    deployments: Path | None = None
    host: str = "127.0.0.1"
    ready_timeout_s: float = 300.0
    drain_timeout_s: float = 10.0


def bind_http(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StackError(
            f"port {port} on {host} (the router's HTTP port) is in use ({exc.strerror}): "
            "stop what uses it or pick another with --http-port"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackError(
                f"port {port} on {host} (the router's gRPC port) is in use ({exc.strerror}): "
                "stop what uses it or pick another with --grpc-port"
            ) from None


def _log_tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def _setup_logging(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


class Stack:
    """One running local stack; :meth:`run` returns the exit code."""

    def __init__(self, options: UpOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.data = DataDir.at(options.data_dir)
        self.stop = asyncio.Event()
        self.registry: subprocess.Popen[bytes] | None = None

    def _deployments_dir(self) -> Path:
        state = read_json(self.data.state_file)
        chosen = self.options.deployments or Path(
            state.get("deploymentsDir") or self.data.default_deployments
        )
        chosen = chosen.expanduser().resolve()
        if str(chosen) != state.get("deploymentsDir"):
            write_json(self.data.state_file, {**state, "deploymentsDir": str(chosen)})
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen

    async def _wait_for(self, check: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.console.status(f"waiting for {what}..."):
            while not check():
                if self.stop.is_set():
                    return
                if time.monotonic() > deadline:
                    raise StackError(f"{what} did not become ready within {timeout_s:.0f}s")
                await asyncio.sleep(0.2)

    async def _start_registry(self, token: str) -> str:
        port = free_port(self.options.host)
        url = f"http://{self.options.host}:{port}"
        log_path = self.data.logs / "registry.log"
        command = [
            *modelplane_command(), "registry", "serve",
            "--host", self.options.host,
            "--port", str(port),
            "--database-url", self.data.database_url,
            "--artifact-root", str(self.data.artifacts),
        ]  # fmt: skip
        self.registry = spawn(command, log_path, {"MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN": token})
        client = RegistryClient(url, token=token, timeout=2.0)
        registry = self.registry

        def ready() -> bool:
            if registry.poll() is not None:
                raise StackError(
                    f"the registry exited with {registry.returncode}; its log ({log_path}) ends with:\n"
                    + _log_tail(log_path)
                )
            try:
                return bool(client.ready())
            except Exception:
                return False

        try:
            await self._wait_for(ready, "the registry", 120.0)
        finally:
            client.close()
        return url

    async def run(self) -> int:
        options = self.options
        self.data.create()
        with self.data.lock():
            handler = _setup_logging(self.data.logs / "modelplane.log")
            http_socket = bind_http(options.host, options.http_port)
            try:
                check_free(options.host, options.grpc_port)
                return await self._run(http_socket)
            finally:
                http_socket.close()
                logging.getLogger().removeHandler(handler)
                handler.close()

    async def _run(self, http_socket: socket.socket) -> int:
        options = self.options
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        deployments_dir = self._deployments_dir()
        token = self.data.token()
        router: Router | None = None
        supervisor: Supervisor | None = None
        supervisor_task: asyncio.Task[None] | None = None
        try:
            registry_url = await self._start_registry(token)
            if self.stop.is_set():
                return 0
            with (
                self.console.status(
                    "registering the demo model (first run: training it takes a few seconds)..."
                ),
                RegistryClient(registry_url, token=token) as client,
            ):
                created = await asyncio.to_thread(ensure_demo, client, self.data.root)
            if created is not None:
                self.console.print(
                    f"registered model [bold]{DEMO_NAME}[/] version {created} (trained just now)"
                )
                if write_demo_deployment(deployments_dir):
                    self.console.print(f"deployment file: {deployments_dir / (DEMO_NAME + '.yaml')}")
            await self._ensure_demo_chat(registry_url, token, deployments_dir)
            if self.stop.is_set():
                return 0

            async def activate(model: str) -> None:
                if supervisor is not None:
                    await supervisor.activate(model)

            discovery = PushedDiscovery(activate)
            router = Router(discovery, RouterSettings(drain_timeout_s=options.drain_timeout_s))
            supervisor = Supervisor(
                self.data,
                deployments_dir,
                RegistryResolver(registry_url, token),
                discovery,
                router.load_report,
                artifact_token=token,
                router_http_port=options.http_port,
                drain_timeout_s=options.drain_timeout_s,
            )
            try:
                await router.start(
                    http_socket=http_socket, grpc_address=f"{options.host}:{options.grpc_port}"
                )
            except OSError as exc:
                raise StackError(f"{exc}: pick another port with --grpc-port") from None
            write_json(
                self.data.stack_file,
                {
                    "pid": os.getpid(),
                    "httpPort": options.http_port,
                    "grpcPort": options.grpc_port,
                    "registryUrl": registry_url,
                    "deploymentsDir": str(deployments_dir),
                    "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
            supervisor_task = asyncio.create_task(supervisor.run(self.stop))
            sup = supervisor
            await self._wait_for(lambda: _all_ready(sup), "the deployments", options.ready_timeout_s)
            if self.stop.is_set():
                return 0
            self._print_ready(registry_url, deployments_dir)
            await self._show_status(supervisor)
            return 0
        finally:
            self.console.print("stopping: draining requests, then the runtimes and the registry...")
            if router is not None:
                await router.stop()
            if supervisor_task is not None:
                self.stop.set()
                await supervisor_task
            if supervisor is not None:
                await supervisor.shutdown()
            if self.registry is not None:
                await terminate(self.registry, 10.0)
            self.data.stack_file.unlink(missing_ok=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.console.print("stopped.")

    async def _ensure_demo_chat(self, registry_url: str, token: str, deployments_dir: Path) -> None:
        """Register ``demo-chat`` on first run: training shows its steps and says how long it took."""
        what = f"{DEMO_CHAT_NAME}, a small language model, on Modelplane's docs"
        with (
            self.console.status(f"checking the registry for {DEMO_CHAT_NAME}...") as status,
            RegistryClient(registry_url, token=token) as client,
        ):

            def progress(step: int, steps: int, loss: float) -> None:
                if self.stop.is_set():
                    raise _InterruptedError
                if step == 0:
                    self.console.print(f"training {what} (first run only, about half a minute)...")
                    status.update(f"training {what}: building the tokenizer...")
                else:
                    status.update(f"training {what}: step {step}/{steps}, loss {loss:.2f}")

            try:
                created = await asyncio.to_thread(ensure_demo_chat, client, self.data.root, progress)
            except _InterruptedError:
                self.console.print(f"{DEMO_CHAT_NAME}: training interrupted; the next run starts it again")
                return
        if created is None:
            return
        version, trained = created
        self.console.print(
            f"registered model [bold]{DEMO_CHAT_NAME}[/] version {version} (trained in "
            f"{trained.seconds:.0f}s: {trained.parameters / 1e6:.2f}M parameters, "
            f"{trained.training.steps} steps, final loss {trained.loss:.2f})"
        )
        if write_demo_chat_deployment(deployments_dir):
            self.console.print(f"deployment file: {deployments_dir / (DEMO_CHAT_NAME + '.yaml')}")

    def _print_ready(self, registry_url: str, deployments_dir: Path) -> None:
        options = self.options
        self.console.print(f"[bold green]{READY_LINE}[/]")
        self.console.print(
            f"  router    http://{options.host}:{options.http_port} (V2 HTTP), "
            f"{options.host}:{options.grpc_port} (V2 gRPC)"
        )
        self.console.print(f"  registry  {registry_url}  (token in {self.data.root / 'token'})")
        self.console.print(f"  deployments from {deployments_dir}, logs in {self.data.logs}")
        self.console.print("\nTry the demo model from another shell:\n")
        self.console.print(curl_command(options.http_port), soft_wrap=True, highlight=False, markup=False)
        self.console.print("\nor with tritonclient (Python):\n")
        self._print_python(tritonclient_snippet(options.http_port, options.grpc_port))
        self.console.print(f"\n{CHAT_HINT}\n")
        self.console.print(
            chat_curl_command(options.http_port), soft_wrap=True, highlight=False, markup=False
        )
        self.console.print("\nor with the openai client (Python, `pip install openai`):\n")
        self._print_python(openai_snippet(options.http_port))
        self.console.print(f"{STOP_HINT}\n")

    def _print_python(self, snippet: str) -> None:
        if self.console.is_terminal:
            self.console.print(Panel(Syntax(snippet, "python", theme="ansi_dark"), expand=False))
        else:
            self.console.print(snippet, soft_wrap=True, highlight=False, markup=False)

    async def _show_status(self, supervisor: Supervisor) -> None:
        def current() -> dict[str, Any]:
            return {"deployments": supervisor.status(), "errors": [str(e) for e in supervisor.errors]}

        if self.console.is_terminal:
            with Live(status_view(current()), console=self.console, refresh_per_second=2) as live:
                while not self.stop.is_set():
                    live.update(status_view(current()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=1.0)
            return
        last: list[str] = []
        while not self.stop.is_set():
            lines = plain_lines(current())
            for line in lines:
                if line not in last:
                    self.console.print(line, soft_wrap=True, highlight=False, markup=False)
            last = lines
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=1.0)


def _all_ready(supervisor: Supervisor) -> bool:
    """Every deployment that should run has a ready replica (or a problem it reports)."""
    rows = supervisor.status()
    if not supervisor.has_read_folder:
        return False
    return all(r["readyReplicas"] >= 1 or r["replicas"] == 0 or r["problem"] for r in rows)


def up(options: UpOptions, console: Console) -> int:
    """Run the stack until Ctrl-C or SIGTERM; returns the exit code."""
    try:
        import uvloop

        return uvloop.run(Stack(options, console).run())
    except (StackError, AlreadyRunningError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 1
