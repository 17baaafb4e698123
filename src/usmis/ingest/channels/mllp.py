"""HL7 v2 over MLLP: an asyncio TCP listener (framing ``\\x0b`` message ``\\x1c\\x0d``).

For each frame: read MSH → find the source (MSH-3, else MSH-4) → authorise (peer
allow-list, MSH-8 shared secret, TLS client certificate) → validate and map (pure) →
commit to the inbox → only then answer.  AA when accepted; AE/AR with an ERR segment
naming segment and field when the message is wrong (it is kept as a dead letter); AR
without storing when the sender is not allowed.  A frame whose MSH cannot be read is
kept as a dead letter of the source its connection authenticated as (else refused).
Garbage outside frames is skipped; a
frame larger than ``max_message`` or a peer that stalls mid-frame is disconnected cleanly.

Commits are grouped: one writer drains whatever frames are waiting (from all connections)
into one transaction, so throughput scales with the number of sender connections while
each ACK still means "durably in the inbox".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import inbox, sources
from usmis.ingest import repository as repo
from usmis.ingest.mapping import hl7v2
from usmis.ingest.mapping.common import Reject
from usmis.ingest.model import Incoming, Source
from usmis.kit.db import transaction
from usmis.kit.logging import get_logger

log = get_logger("usmis.ingest.mllp")

SB, EB, CR = 0x0B, 0x1C, 0x0D


@dataclass
class _Job:
    incoming: Incoming
    reject: Reject | None
    iin_status: str | None
    done: asyncio.Future[bool] = field(repr=False)


@dataclass
class _Session:
    """One connection: the source it authenticated as (by its first authorised message)."""

    source: Source | None = None


@dataclass
class Stats:
    frames: int = 0
    accepted: int = 0
    rejected: int = 0
    refused: int = 0
    duplicates: int = 0
    batches: int = 0


class MllpServer:
    """The listener.  ``await start()``, then ``port``; ``await stop()`` to close."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        host: str = "127.0.0.1",
        port: int = 2575,
        ssl_context: ssl.SSLContext | None = None,
        max_message: int = 4 * 1024 * 1024,
        idle_timeout: float = 300.0,
        max_batch: int = 500,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self.stats = Stats()
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._sources: dict[str, tuple[float, Source | None]] = {}

    async def start(self) -> None:
        self._writer_task = asyncio.create_task(self._writer())
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, ssl=self.ssl_context, limit=2**16
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("mllp listening", host=self.host, port=self.port)

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task

    # --- one connection ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if peer else ""
        fingerprint = _cert_fingerprint(writer)
        session = _Session()
        buf = bytearray()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except (TimeoutError, ConnectionError):
                    return
                if not chunk:
                    return
                buf += chunk
                while True:
                    start = buf.find(SB)
                    if start < 0:
                        buf.clear()  # bytes outside any frame: skipped
                        break
                    end = buf.find(bytes((EB, CR)), start)
                    if end < 0:
                        if start:
                            del buf[:start]
                        if len(buf) > self.max_message:
                            log.warning("mllp frame too large, closing", peer=peer_ip)
                            return
                        break
                    frame = hl7v2.normalize(bytes(buf[start + 1 : end]))
                    del buf[: end + 2]
                    reply = await self.handle(frame, peer_ip, fingerprint, session)
                    writer.write(bytes((SB,)) + reply + bytes((EB, CR)))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # never let one connection take the listener down
            log.exception("mllp connection failed", peer=peer_ip)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, raw: bytes, peer_ip: str, fingerprint: str | None,
                     session: _Session | None = None) -> bytes:
        """One framed message → the ACK bytes to send back (after the inbox commit).

        ``session``: the connection's state.  A frame whose MSH cannot be read names no
        source; on a connection that already authenticated as a source it is that source's
        dead letter (nothing is lost), otherwise it is refused without being stored."""
        self.stats.frames += 1
        try:
            header = hl7v2.read_header(raw)
        except Reject as r:
            if session is None or session.source is None:
                self.stats.refused += 1
                return hl7v2.ack(None, "AR", r)
            return await self._keep(session.source, raw, None, r, None, None)
        source = (await self._source(header.sending_app)
                  or await self._source(header.sending_app.lower())
                  or await self._source(header.sending_facility))
        why = sources.authorise_mllp(
            source, peer_ip=peer_ip, secret=header.security, cert_fingerprint=fingerprint
        )
        if why is not None or source is None:
            self.stats.refused += 1
            log.warning("mllp message refused", peer=peer_ip, reason=why)
            return hl7v2.ack(header, "AR", Reject("unauthorised", "MSH-3", why or "",
                                                  ack="AR", hl7_error=204))
        if session is not None:
            session.source = source
        reject: Reject | None = None
        iin: str | None = None
        event = None
        try:
            mapped = hl7v2.map_message(raw, source.id)
            iin, event = mapped.iin_status, mapped.event_time
        except Reject as r:
            reject = r
        except Exception:  # a mapper bug must not cost the message: keep it, reject it
            log.exception("hl7 mapping crashed", source=source.id)
            reject = Reject("internal", "message", "mapping failed unexpectedly",
                            hl7_error=207)
        return await self._keep(source, raw, header, reject, iin, event)

    async def _keep(self, source: Source, raw: bytes, header: hl7v2.Header | None,
                    reject: Reject | None, iin: str | None, event: Any) -> bytes:
        """Commit the frame to the inbox (pending, or dead with ``reject``); the ACK."""
        job = _Job(
            Incoming(source_id=source.id, channel="mllp", format="hl7v2",
                     message_id=(header.control_id if header else "") or "?", raw=raw,
                     event_time=event),
            reject, iin, asyncio.get_running_loop().create_future(),
        )
        await self._queue.put(job)
        try:
            new = await job.done
        except Exception:
            log.exception("mllp inbox write failed", source=source.id)
            return hl7v2.ack(header, "AE", Reject(
                "internal", "message", "not stored, send again", hl7_error=207))
        if not new:
            self.stats.duplicates += 1
        if reject is not None:
            self.stats.rejected += 1
            return hl7v2.ack(header, "AR" if reject.ack == "AR" else "AE", reject)
        self.stats.accepted += 1
        return hl7v2.ack(header, "AA")

    async def _source(self, source_id: str) -> Source | None:
        if not source_id:
            return None
        hit = self._sources.get(source_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < 5.0:
            return hit[1]

        def load() -> Source | None:
            with self.engine.connect() as conn:
                return repo.get_source(conn, source_id)

        s = await asyncio.to_thread(load)
        self._sources[source_id] = (now, s)
        return s

    # --- group commit -----------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            first = await self._queue.get()
            jobs = [first]
            while len(jobs) < self.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                results = await asyncio.to_thread(self._write, jobs)
            except Exception as exc:
                for j in jobs:
                    if not j.done.done():
                        j.done.set_exception(exc)
                continue
            self.stats.batches += 1
            for j, new in zip(jobs, results, strict=True):
                if not j.done.done():
                    j.done.set_result(new)

    def _write(self, jobs: list[_Job]) -> list[bool]:
        with transaction(self.engine) as conn:
            receipts = inbox.receive_group(
                conn, self.settings, [(j.incoming, j.reject, j.iin_status) for j in jobs])
        return [r.new for r in receipts]


def _cert_fingerprint(writer: asyncio.StreamWriter) -> str | None:
    obj: Any = writer.get_extra_info("ssl_object")
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """Server TLS; with ``client_ca`` a client certificate is required (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def run(settings: Settings, engine: Engine, *, host: str, port: int,
              ssl_context: ssl.SSLContext | None = None,
              ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled (``usmis mllp serve``)."""
    server = MllpServer(settings, engine, host=host, port=port, ssl_context=ssl_context)
    await server.start()
    if ready is not None:
        ready.set()
    try:
        await server.serve_forever()
    finally:
        await server.stop()


class MllpSender:
    """A blocking MLLP client that waits for the whole ACK and re-sends after a broken
    connection (at-least-once; the inbox deduplicates identical messages)."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, retries: int = 50) -> None:
        self.host, self.port, self.timeout, self.retries = host, port, timeout, retries
        self._sock: Any = None

    def _connect(self) -> Any:
        import socket

        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def send(self, message: bytes) -> bytes:
        """Send one message; return the ACK body (unframed)."""
        frame = bytes((SB,)) + message + bytes((EB, CR))
        for attempt in range(self.retries):
            try:
                sock = self._connect()
                sock.sendall(frame)
                buf = b""
                while True:
                    chunk: bytes = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("listener closed the connection")
                    buf += chunk
                    end = buf.find(bytes((EB, CR)))
                    if end >= 0:
                        start = buf.find(bytes((SB,)))
                        return buf[start + 1 : end]
            except OSError:
                self.close()
                time.sleep(min(2.0, 0.05 * (attempt + 1)))
        raise ConnectionError("MLLP listener unreachable")


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK body."""
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA|"):
            return seg.split(b"|")[1].decode("ascii", errors="replace")
    return ""
