"""Fixtures of the FHIR store tests: a real app over a fresh database of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from usmis.access.tokens import issue_token
from usmis.app import create_app
from usmis.config import Settings
from usmis.kit.crypto import Keyring, keyring_for
from usmis.kit.db import make_engine


@pytest.fixture
def keys(settings: Settings) -> Keyring:
    return keyring_for(settings.resolved_key_file)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Any]:
    eng = make_engine(settings.resolved_database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def admin_token(settings: Settings) -> str:
    return issue_token(settings, subject="test-admin", role="admin")


@pytest.fixture
def client(settings: Settings, admin_token: str) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {admin_token}"
        yield c


def make_patient(iin: str = "900101300123", family: str = "Testova", phone: str = "+77010000000",
                 **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "https://usmis.kz/sid/iin", "value": iin}],
        "name": [{"family": family, "given": ["Aigul"]}],
        "telecom": [{"system": "phone", "value": phone}],
        "gender": "female",
        "birthDate": "1990-01-01",
        **extra,
    }


def make_observation(patient_id: str, code: str = "8867-4", value: float = 72.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2024-03-01T10:00:00+05:00",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }


class LiveServer:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def live_server(settings: Settings, admin_token: str) -> Iterator[LiveServer]:
    """A real uvicorn server on a free 127.0.0.1 port (in a thread), real sockets."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", admin_token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
