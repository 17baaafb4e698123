"""FHIR R4 search: parameter registry, index extraction, index writes and query building.

The public surface STORE uses (see docs/fhir-search.md)::

    index_rows, write_index, write_index_many, delete_index   (write path)
    search, SearchResult, ResourceSource                       (read path)
    searchable_params, SEARCHABLE_TYPES                        (CapabilityStatement)
"""

from __future__ import annotations

from usmis.fhir.search.indexing import BlindIndex, index_rows
from usmis.fhir.search.query import ResourceSource, Restrict
from usmis.fhir.search.registry import SEARCHABLE_TYPES, SearchParam, searchable_params
from usmis.fhir.search.repository import delete_index, write_index, write_index_many
from usmis.fhir.search.service import SearchResult, search

__all__ = [
    "SEARCHABLE_TYPES",
    "BlindIndex",
    "ResourceSource",
    "Restrict",
    "SearchParam",
    "SearchResult",
    "delete_index",
    "index_rows",
    "search",
    "searchable_params",
    "write_index",
    "write_index_many",
]
