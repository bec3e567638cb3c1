"""An emulated network link between the bench and a server: a TCP proxy that paces bytes.

Every byte crosses the link at ``mbit_per_s`` in each direction (one queue per direction,
shared by all connections, like one access link) and arrives ``rtt_ms / 2`` after it left, so a
unary call pays one round trip plus its request and response sizes over the rate: what a user
on that link sees, whatever the protocol above TCP does.

Why not Envoy's bandwidth-limit filter: its token bucket holds a full second of tokens, so on
a 100 Mbit/s setting a 3 MB upload passed at loopback speed (measured: 0.1 s where the link
takes 0.25 s plus the round trip) - it limits sustained throughput, not the time of one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 16 * 1024
"""Bytes read at a time: at 20 Mbit/s one chunk is ~6.5 ms of link time, a fine enough grain."""


@dataclass(frozen=True)
class Link:
    mbit_per_s: float
    rtt_ms: float

    def __post_init__(self) -> None:
        if not (self.mbit_per_s > 0 and self.rtt_ms >= 0):
            raise ValueError(f"a link needs a rate > 0 and a round trip >= 0, got {self}")

    @classmethod
    def parse(cls, text: str) -> Link:
        """``MBIT:RTT_MS``, e.g. ``20:50`` (20 Mbit/s, 50 ms round trip)."""
        rate, sep, rtt = text.partition(":")
        try:
            return cls(float(rate), float(rtt) if sep else 0.0)
        except ValueError:
            raise ValueError(f"--link {text!r}: expected MBIT:RTT_MS, e.g. 20:50") from None

    @property
    def bytes_per_s(self) -> float:
        return self.mbit_per_s * 1e6 / 8

    def describe(self) -> str:
        return f"{self.mbit_per_s:g} Mbit/s, {self.rtt_ms:g} ms RTT"


class _Direction:
    """One direction of the link: when its wire is next free, and the one-way delay."""

    def __init__(self, link: Link) -> None:
        self.seconds_per_byte = 1.0 / link.bytes_per_s
        self.delay = link.rtt_ms / 2000.0
        self.free_at = 0.0

    def due(self, size: int) -> float:
        """When ``size`` bytes sent now are all at the far end."""
        start = max(time.monotonic(), self.free_at)
        self.free_at = start + size * self.seconds_per_byte
        return self.free_at + self.delay


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: _Direction) -> None:
    """Copy ``reader`` to ``writer`` through ``direction``: reads go on while earlier chunks are
    on the wire (a queue), each written when it is due."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivery = asyncio.ensure_future(deliver())
    delivery.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen, not logged
    try:
        while data := await reader.read(CHUNK):
            await queue.put((direction.due(len(data)), data))
        await queue.put((0.0, b""))
        await delivery
    except OSError:  # either side went away: the other direction ends too
        pass
    finally:
        delivery.cancel()


class LinkProxy:
    """``127.0.0.1:port`` forwarding to ``upstream`` (HOST:PORT) over ``link``, on a thread of
    its own (its event loop paces the bytes; the bench's clients are elsewhere)."""

    def __init__(self, upstream: str, link: Link) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.link = link
        self.up, self.down = _Direction(link), _Direction(link)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping: asyncio.Event
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, name="link-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for writer in self._writers:  # connections still open: the bench is done with them
            writer.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:  # asyncio.wait refuses an empty set
            await asyncio.wait(others, timeout=5)

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:  # noqa: E501
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(
            _pump(client_reader, server_writer, self.up),
            _pump(server_reader, client_writer, self.down),
        )
        for writer in (client_writer, server_writer):
            writer.close()
            self._writers.discard(writer)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the link proxy did not start")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)


@contextlib.contextmanager
def emulated(upstream: str, link: Link) -> Iterator[LinkProxy]:
    """A running :class:`LinkProxy` for the ``with`` block."""
    proxy = LinkProxy(upstream, link)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
