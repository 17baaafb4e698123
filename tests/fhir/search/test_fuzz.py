"""Property: any query string gives a result or a 400 BadRequest, never another error."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usmis.kit.errors import BadRequest

from .conftest import Store

NAMES = [
    "code", "code:not", "code:text", "status", "patient", "subject:Patient", "patient.identifier",
    "date", "value-quantity", "identifier", "name", "name:exact", "name:contains", "birthdate",
    "_id", "_lastUpdated", "_sort", "_count", "_include", "_revinclude", "_has:Observation:patient",
    "_summary", "_total", "_cursor", "family:missing", "gender", "address-city", "nonsense",
    "_has:Observation:patient:code", "subject:Group.name", "encounter.status", "_elements",
]  # fmt: skip
VALUE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "1234-5",
            "http://loinc.org|1234-5",
            "|x",
            "x|",
            "ge2024",
            "2024-01-15",
            "Patient/pA",
            "pA",
            "true",
            "gt5.4|http://u|mg",
            "-date,code",
            "1,2,3",
            "\\,",
            "\\|",
            "%",
            "_",
            "ap1e9",
            "eq-5",
            "Observation:patient",
            "*",
        ]
    ),  # fmt: skip
)
PAIR = st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=20)), VALUE)
TYPES = st.sampled_from(["Patient", "Observation", "Encounter", "Organization", "Basic"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rtype=TYPES, params=st.lists(PAIR, max_size=4))
def test_random_params_never_crash(
    world_store: Store, rtype: str, params: list[tuple[str, str]]
) -> None:
    _search_or_400(world_store, rtype, params)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rtype=TYPES, query=st.text(max_size=60))
def test_random_query_strings_never_crash(world_store: Store, rtype: str, query: str) -> None:
    _search_or_400(world_store, rtype, parse_qsl(query, keep_blank_values=True))


def _search_or_400(store: Store, rtype: str, params: list[tuple[str, str]]) -> None:
    status = 200
    try:
        store.search(rtype, params)
    except BadRequest as e:
        status = e.status
    assert status == 400 or status == 200


def test_nul_and_huge_values(world_store: Store) -> None:
    for params in ([("code", "a\x00b")], [("name\x00", "x")], [("_count", "9" * 40)],
                   [("code", "x" * 5000)], [("name", "ä" * 3000)], [("date", "9999-12-31")],
                   [("value-quantity", "1e400")], [("_lastUpdated", "0001")]):  # fmt: skip
        _search_or_400(world_store, "Observation", params)
