"""The one seam between the FHIR service and the access policy / audit log.

The service asks its :class:`AccessContext` three things (docs/CONTRACTS.md): may this
principal do this action on this type / this stored row (``authorize`` raises
:class:`usmis.kit.errors.Forbidden`); which rows may it see at all (``row_filter``: an SQL
predicate over ``fhir_resource`` applied *inside* searches so totals do not leak); and
it ``record``s every read, search, write and export in the audit log (writes on the same
connection, hence in the same transaction as the work; reads through the access domain's
read spool, journaled before the answer).

``usmis.access`` provides the real implementation for HTTP requests;
:class:`SystemAccess` is for trusted in-process callers (ingest pipeline, CLI, bench)
that authorise and audit at their own boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import ColumnElement, Connection, Table

# Actions: read vread history search create update patch delete everything export validate


@dataclass(frozen=True, slots=True)
class RowMeta:
    """The plaintext policy columns of one stored resource (no personal data)."""

    resource_type: str
    id: str
    patient_id: str | None = None
    source_id: str | None = None
    author_org: str | None = None
    sensitivity: str | None = None


class AccessContext(Protocol):
    @property
    def source_id(self) -> str | None:
        """Source system stamped on written rows (None: taken from ``meta.source``)."""
        ...

    @property
    def author_org(self) -> str | None: ...

    def authorize(self, action: str, resource_type: str, row: RowMeta | None = None) -> None:
        """Raise Forbidden unless allowed.  ``row`` is None for type-level checks."""
        ...

    def row_filter(self, table: Table) -> ColumnElement[bool] | None:
        """Predicate limiting ``table`` (shaped like fhir_resource) to visible rows."""
        ...

    def record(
        self,
        conn: Connection,
        action: str,
        resource_type: str | None,
        rows: list[RowMeta],
        *,
        outcome: str = "0",
        query: str | None = None,
    ) -> None:
        """Append audit entries (same transaction).  ``outcome`` is AuditEvent.outcome."""
        ...


@runtime_checkable
class ReadLookup(Protocol):
    """Optional part of the seam: what deciding on rows will need, fetched by the store in
    the statement that reads them (one round trip instead of two)."""

    def read_lookup(self, dialect: str) -> tuple[str, dict[str, Any]] | None:
        """An SQL expression over the Patient ``{pid}`` giving ``kind|value`` strings, and
        its parameters (None: nothing to fetch)."""
        ...

    def adopt_lookup(self, patient_id: str | None, rows: list[tuple[str, str]]) -> None:
        """The (kind, value) pairs that expression gave for ``patient_id``."""
        ...


@dataclass(slots=True)
class SystemAccess:
    """Full access, no audit: for in-process callers that audit at their own boundary."""

    source_id: str | None = None
    author_org: str | None = None

    def authorize(self, action: str, resource_type: str, row: RowMeta | None = None) -> None:
        return None

    def row_filter(self, table: Table) -> ColumnElement[bool] | None:
        return None

    def record(
        self,
        conn: Connection,
        action: str,
        resource_type: str | None,
        rows: list[RowMeta],
        *,
        outcome: str = "0",
        query: str | None = None,
    ) -> None:
        return None
