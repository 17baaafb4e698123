"""The ingest fast paths of a transaction bundle give the answers of the generic ones.

Identifier lookups straight on the token index (one by one and prefetched per bundle),
index rows collected per bundle and written at its end, a GET entry seeing the bundle's
writes, a PUT then PATCH of one resource leaving only its newest index rows.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from usmis.fhir.search.service import search
from usmis.fhir.service import FhirService
from usmis.kit.crypto import Keyring
from usmis.kit.db import unit_of_work
from usmis.kit.errors import PreconditionFailed

from .conftest import make_patient

SRC = "https://usmis.kz/sid/source/his-9/patient"


def _patient(value: str, **extra: Any) -> dict[str, Any]:
    p = make_patient()
    p["identifier"].append({"system": SRC, "value": value})
    return {**p, **extra}


def _put(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{abs(hash(value)) % 10**12:012d}",
        "resource": _patient(value, **extra),
        "request": {"method": "PUT", "url": f"Patient?identifier={SRC}|{value}"},
    }


def _generic_ids(svc: FhirService, value: str) -> list[str]:
    r = search(svc.conn, "Patient", [("identifier", f"{SRC}|{value}"), ("_count", "5")],
               base_url="", hmac=svc.hmac)
    return sorted(r.ids)


def test_bundle_lookups_match_the_generic_search(engine: Any, keys: Keyring) -> None:
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        first = svc.transaction({"resourceType": "Bundle", "type": "transaction",
                                 "entry": [_put("f1"), _put("f2")]})
        ids = [e["response"]["location"].split("/")[1] for e in first["entry"]]
        assert svc.search_ids("Patient", f"identifier={SRC}|f1") == _generic_ids(svc, "f1")
        assert _generic_ids(svc, "f1") == [ids[0]]
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        # two known records and one new in one bundle (the prefetched path), then a search
        # entry that must see this bundle's own writes
        out = svc.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [
            _put("f1", active=False), _put("f2"), _put("f3"),
            {"request": {"method": "GET", "url": f"Patient?identifier={SRC}|f3"}},
        ]})
        locs = [e["response"].get("location", "") for e in out["entry"][:3]]
        assert [x.split("/")[1] for x in locs[:2]] == ids
        assert [x.split("/")[3] for x in locs] == ["2", "1", "1"]  # f2 as it was: no version
        found = out["entry"][3]["resource"]
        assert found["total"] == 1
        assert found["entry"][0]["resource"]["id"] == locs[2].split("/")[1]
        for v in ("f1", "f2", "f3"):
            assert svc.search_ids("Patient", f"identifier={SRC}|{v}") == _generic_ids(svc, v)
        gone = svc.search_ids("Patient", f"identifier={SRC}|nothing")
        assert gone == [] == _generic_ids(svc, "nothing")


def test_put_then_patch_in_one_bundle_keeps_only_the_newest_index_rows(
    engine: Any, keys: Keyring
) -> None:
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        svc.transaction({"resourceType": "Bundle", "type": "transaction",
                         "entry": [_put("p1")]})
        pid = svc.search_ids("Patient", f"identifier={SRC}|p1")[0]
        ops = [{"op": "replace", "path": "/identifier/1/value", "value": "p2"}]
        patch = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                 "data": base64.b64encode(orjson.dumps(ops)).decode()}
        body = _patient("p1", id=pid)
        svc.transaction({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": body, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
            {"resource": patch, "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
        ]})
        assert _generic_ids(svc, "p1") == [] == svc.search_ids("Patient", f"identifier={SRC}|p1")
        assert _generic_ids(svc, "p2") == [pid] == svc.search_ids(
            "Patient", f"identifier={SRC}|p2")


def test_duplicates_still_refuse_a_conditional_update(engine: Any, keys: Keyring) -> None:
    with unit_of_work(engine, write=True) as conn:
        svc = FhirService(conn, keys)
        svc.create(_patient("d1"))
        svc.create(_patient("d1"))
        with pytest.raises(PreconditionFailed):
            svc.transaction({"resourceType": "Bundle", "type": "transaction",
                             "entry": [_put("d1"), _put("d9")]})


def test_matched_creates_answer_their_location_unread_when_asked(engine: Any, keys: Keyring
                                                                 ) -> None:
    """The ingest worker needs only where a matched conditional create went."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _patient("lean-1"), "request": {
            "method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SRC}|lean-1"}}]}
    with unit_of_work(engine, write=True) as conn:
        first = FhirService(conn, keys).transaction(bundle)["entry"][0]["response"]
    rid = first["location"].split("/")[1]
    with unit_of_work(engine, write=True) as conn:
        read = FhirService(conn, keys).transaction(bundle)["entry"][0]["response"]
        lean = FhirService(conn, keys).transaction(bundle, read_matched=False)
    assert read["status"].startswith("200")
    assert read["location"] == f"Patient/{rid}/_history/1"
    assert lean["entry"][0]["response"] == {"status": "200 OK", "location": f"Patient/{rid}"}
