"""Every registered parameter of every type builds valid SQL on both backends."""

from __future__ import annotations

from usmis.fhir.search import SEARCHABLE_TYPES, searchable_params

from .conftest import Store

SAMPLE = {
    "token": "x", "string": "x", "date": "2024", "reference": "1", "quantity": "5",
    "number": "5", "uri": "http://x",
}  # fmt: skip


def test_every_parameter_searches_sorts_and_reports_missing(world_store: Store) -> None:
    checked = 0
    for rtype in SEARCHABLE_TYPES:
        for name, p in searchable_params(rtype).items():
            value = "1990" if p.blind and p.type == "date" else SAMPLE[p.type]
            q = [(name, value), (f"{name}:missing", "false")]
            if not p.blind:
                q.append(("_sort", f"-{name}"))
            assert world_store.search(rtype, q).total is not None
            checked += 1
    assert checked > 350
