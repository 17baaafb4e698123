"""Conditional create is race-safe: 8 clients, one identifier (however its criteria are
encoded), exactly one resource."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx

from .conftest import LiveServer, make_patient


def test_eight_concurrent_conditional_creates_make_one_resource(live_server: LiveServer) -> None:
    ident = "https://usmis.kz/sid/source/clinic-a/patient|race-1"
    barrier = threading.Barrier(8)

    def one(_: int) -> tuple[int, str]:
        body = make_patient()
        body["identifier"].append(
            {"system": "https://usmis.kz/sid/source/clinic-a/patient", "value": "race-1"}
        )
        with httpx.Client(base_url=live_server.url, headers=live_server.headers,
                          timeout=60) as c:
            barrier.wait()
            # the same criteria spelled three ways: one search, so one lock
            criteria = [f"identifier={ident}", "identifier=" + quote(ident, safe=""),
                        f"identifier={ident.replace('|', '%7C')}"][_ % 3]
            r = c.post("/fhir/Patient", json=body, headers={"If-None-Exist": criteria})
            return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 7 + [201]
    assert len({rid for _, rid in results}) == 1
    with httpx.Client(base_url=live_server.url, headers=live_server.headers) as c:
        found = c.get("/fhir/Patient", params={"identifier": ident}).json()
    assert found["total"] == 1
