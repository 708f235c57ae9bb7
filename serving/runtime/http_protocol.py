"""uvicorn's HTTP protocol with each answer written in one piece.

uvicorn writes a response's head and its body with two ``transport.write`` calls, so over
``TCP_NODELAY`` an answer leaves as two segments. A client (or the router in front) that reads
between them wakes twice per answer: traced at one request in flight, the router read the head
alone in nine answers of ten, and each extra wake-up costs a poll, a read and another pass through
its parser. :class:`CorkedHttpToolsProtocol` hands uvicorn a transport that holds a write ending a
head (``\r\n\r\n``) until the next write, the body, and sends the two as one. A head with no body
(a HEAD answer, a streamed body not yet produced) goes out at the end of the event-loop pass it
was written in. The body is not held: an answer leaves as soon as uvicorn has it, not after the
rest of the pass. A body over ``JOIN_LIMIT`` follows its head in a write of its own: it fills
segments anyway, and joining would copy it. Everything else (close, flow control, addresses) goes
to the real transport, a close after sending what is held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_END = b"\r\n\r\n"
JOIN_LIMIT = 64 * 1024  # bytes of body worth copying to save a write


class CorkedTransport:
    """A transport's stand-in that sends a response head together with the body written after it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._transport.is_closing():
            return
        chunk = bytes(data)
        if chunk.endswith(HEAD_END):  # a head (or an interim answer): wait for the body
            self._held.append(chunk)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_at_pass_end)
            return
        if self._held and len(chunk) <= JOIN_LIMIT:
            self._held.append(chunk)
            chunk = b"".join(self._held)
            self._held = []
        else:
            self.flush()
        if chunk:
            self._transport.write(chunk)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held (a head whose body did not follow)."""
        held = self._held
        if not held:
            return
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _flush_at_pass_end(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol, ...
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked = CorkedTransport(transport, asyncio.get_running_loop())
        super().connection_made(corked)  # type: ignore[arg-type]
