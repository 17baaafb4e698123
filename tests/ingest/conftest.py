"""Fixtures of the ingest tests: an engine, registered sources, a live MLLP listener."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from usmis.config import Settings
from usmis.ingest import sources
from usmis.ingest.channels.mllp import MllpServer
from usmis.kit.db import make_engine, transaction


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.resolved_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def hl7_sources(engine: Engine) -> dict[str, str]:
    """Two MLLP sources: one open to localhost, one requiring a shared secret."""
    with transaction(engine) as conn:
        sources.add_source(conn, source_id="his-test", name="Test HIS", kind="hospital",
                           channels=["mllp", "file"], formats=["hl7v2"])
        sources.add_source(conn, source_id="lis-test", name="Test LIS", kind="lab",
                           channels=["mllp"], formats=["hl7v2"], mllp_secret="s3cret-lab")
    return {"his-test": "", "lis-test": "s3cret-lab"}


@dataclass
class Listener:
    server: MllpServer
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def mllp(settings: Settings, engine: Engine) -> Iterator[Listener]:
    """A real MLLP listener on a free port, served from a background event loop."""
    loop = asyncio.new_event_loop()
    server = MllpServer(settings, engine, host="127.0.0.1", port=0, idle_timeout=10)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield Listener(server, loop)
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
