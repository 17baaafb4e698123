"""Property-based: malformed JSON and resources never make a 500; errors are 4xx
OperationOutcomes (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import make_observation, make_patient

SETTINGS = settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = st.sampled_from([
    "resourceType", "id", "meta", "status", "code", "subject", "valueQuantity", "valueString",
    "name", "family", "given", "identifier", "system", "value", "telecom", "birthDate",
    "contained", "extension", "url", "reference", "_status", "entry", "request", "method",
    "coding", "text", "div", "x",
])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["Patient", "Observation", "Bundle", "2020-13-45", "final", "urn:uuid:x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def _is_outcome_error(r: Any) -> bool:
    return 400 <= r.status_code < 500 and r.json()["resourceType"] == "OperationOutcome"


@SETTINGS
@given(body=st.binary(max_size=64))
def test_random_bytes(client: TestClient, body: bytes) -> None:
    for method, url in (("POST", "/fhir/Patient"), ("PUT", "/fhir/Patient/p1"),
                        ("POST", "/fhir"), ("POST", "/fhir/Observation/$validate")):
        r = client.request(method, url, content=body,
                           headers={"Content-Type": "application/fhir+json"})
        assert r.status_code < 500, (method, url, r.text)
        if r.status_code >= 400:
            assert _is_outcome_error(r)


@SETTINGS
@given(value=json_values)
def test_random_json_documents(client: TestClient, value: Any) -> None:
    for method, url in (("POST", "/fhir/Observation"), ("PUT", "/fhir/Observation/o1"),
                        ("POST", "/fhir")):
        r = client.request(method, url, content=json.dumps(value),
                           headers={"Content-Type": "application/fhir+json"})
        assert r.status_code < 500, (method, url, r.text)
        if r.status_code >= 400:
            assert _is_outcome_error(r)


@SETTINGS
@given(key=KEYS, value=json_values, which=st.sampled_from(["Patient", "Observation"]))
def test_mutated_resources(client: TestClient, key: str, value: Any, which: str) -> None:
    res = make_patient() if which == "Patient" else make_observation("p1")
    res[key] = value
    r = client.post(f"/fhir/{which}", json=res)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert _is_outcome_error(r)
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": res, "request": {"method": "POST", "url": which}}]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert _is_outcome_error(r)


@SETTINGS
@given(name=st.text(min_size=1, max_size=12), value=st.text(max_size=16),
       path=st.sampled_from(["Patient", "Observation", "Encounter", "Substance"]))
def test_random_search_parameters(client: TestClient, name: str, value: str, path: str) -> None:
    r = client.get(f"/fhir/{path}", params={name: value})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert _is_outcome_error(r)


patch_ops = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "nope"]),
     "path": st.sampled_from(["/gender", "/active", "/name/0/family", "/name/-", "/name/0",
                              "/telecom/0/value", "/birthDate", "/id", "/resourceType",
                              "/meta", "/x", "", "gender"])},
    optional={"value": json_values,
              "from": st.sampled_from(["/name/0", "/gender", "/x", "/identifier/0"])},
), max_size=4) | json_values


@SETTINGS
@given(ops=patch_ops)
def test_random_json_patch(client: TestClient, ops: Any) -> None:
    """Patches of an existing Patient: applied to a valid resource, or a 4xx saying why."""
    pid = client.post("/fhir/Patient", json=make_patient()).json()["id"]
    r = client.patch(f"/fhir/Patient/{pid}", content=json.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        stored = client.get(f"/fhir/Patient/{pid}").json()
        assert client.post("/fhir/Patient/$validate", json=stored).json()["issue"][0][
            "severity"] == "information"
    else:
        assert _is_outcome_error(r)


def test_nul_characters_are_refused_not_crashed(client: TestClient) -> None:
    """PostgreSQL text cannot hold NUL; such input must be a 400, not a driver error."""
    res = make_patient(family="Nul\u0000Name")
    r = client.post("/fhir/Patient", json=res)
    assert _is_outcome_error(r)
    r = client.get("/fhir/Patient", params={"family": "a\u0000b"})
    assert r.status_code < 500
    r = client.get("/fhir/Patient/a%00b")
    assert r.status_code < 500
