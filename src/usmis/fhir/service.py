"""The FHIR service: what the store does, for HTTP endpoints and in-process callers alike.

It never commits: the boundary owns the transaction (``usmis.kit.db.unit_of_work`` for
HTTP and CLI, the ingest pipeline's own for messages), so a write, its index rows and its
audit entries commit together.  Every body is sealed with :class:`usmis.kit.crypto.Keyring`
before it reaches SQL and opened after; every action goes through the access context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import jsonpatch
import orjson
from sqlalchemy import Connection, Row

from usmis.fhir import indexing, model
from usmis.fhir import repository as repo
from usmis.fhir.context import AccessContext, ReadLookup, RowMeta, SystemAccess
from usmis.fhir.errors import InvalidResource, InvalidResult, MethodNotAllowed
from usmis.fhir.search.registry import searchable_params
from usmis.fhir.tables import resource as resource_table
from usmis.fhir.validation import ID_RE, Issue, is_resource_type, validate_resource
from usmis.kit.crypto import Keyring
from usmis.kit.errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    UsmisError,
)

SEARCH_PURPOSE = "fhir-search"


@dataclass(slots=True)
class WriteResult:
    resource: dict[str, Any]
    created: bool
    status: int
    version_id: int
    last_updated: datetime

    @property
    def location(self) -> str:
        r = self.resource
        return f"{r['resourceType']}/{r['id']}/_history/{self.version_id}"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


@dataclass(slots=True)
class StoredVersion:
    """One stored version, body still as JSON bytes (None when it is a deletion)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    body: bytes | None
    meta: RowMeta


def parse_etag(value: str | None) -> int | None:
    """``W/"3"`` or ``"3"`` or ``3`` → 3 (If-Match)."""
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit():
        raise BadRequest("If-Match must be an ETag such as W/\"1\"", expression=["If-Match"])
    return int(v)


class Buffered(NamedTuple):
    """A written resource whose index rows wait in an :data:`IndexBuffer`; ``care``: it is
    new and its care/consent projection waits too (for the patient ``patient_id``);
    ``row``: it is new and its resource row waits too (sealed, ready to insert)."""

    rtype: str
    res: dict[str, Any]
    care: bool = False
    patient_id: str | None = None
    row: dict[str, Any] | None = None


IndexBuffer = dict[tuple[str, str], Buffered]


def flush_index_buffer(conn: Connection, keys: Keyring, buf: IndexBuffer) -> None:
    """Write what waits in ``buf`` — the rows of new resources, the index rows (of
    resources known to be new or whose old rows were already deleted), the projections
    of the new ones — and empty it."""
    if buf:
        _write_rows(conn, buf)
        indexing.write_index_many(conn, [(b.rtype, b.res) for b in buf.values()],
                                  partial(keys.blind_index, SEARCH_PURPOSE), replace=False)
        indexing.on_create_many(conn, [(b.rtype, b.res["id"], b.patient_id, b.res)
                                       for b in buf.values() if b.care])
        buf.clear()


def _content(res: dict[str, Any]) -> bytes:
    """A resource as sorted JSON without the two meta elements the store sets itself."""
    meta = res.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        res = {k: v for k, v in res.items() if k != "meta"} | ({"meta": meta} if meta else {})
    return orjson.dumps(res, option=orjson.OPT_SORT_KEYS)


def _write_rows(conn: Connection, buf: IndexBuffer) -> None:
    """Insert the resource rows waiting in ``buf`` (their index rows wait on)."""
    rows = [b.row for b in buf.values() if b.row is not None]
    if rows:
        repo.insert_current(conn, rows)
        for key, b in buf.items():
            if b.row is not None:
                buf[key] = b._replace(row=None)


class FhirService:
    def __init__(
        self,
        conn: Connection,
        keys: Keyring,
        access: AccessContext | None = None,
        *,
        base_url: str = "",
        index_buffer: IndexBuffer | None = None,
        held_locks: frozenset[str] = frozenset(),
        known_ids: dict[tuple[str, str], list[str]] | None = None,
    ) -> None:
        """``held_locks``: conditional keys the caller already locked in this transaction
        outside any savepoint (so held until its end): :meth:`lock` skips them.
        ``known_ids``: answers to conditional criteria, (type, criteria) → ids, that the
        caller keeps true for the whole transaction (it holds their keys' locks and adds
        what it writes, e.g. the ingest worker across a batch): :meth:`search_ids` takes
        them first."""
        self.conn = conn
        self.keys = keys
        self.access: AccessContext = access or SystemAccess()
        # The policy looks up care/consent on the work's own connection (access, issue 6).
        bind = getattr(self.access, "bind", None)
        if callable(bind):
            bind(conn)
        self.base_url = base_url.rstrip("/")
        self.hmac: Callable[[str], str] = partial(keys.blind_index, SEARCH_PURPOSE)
        # While a transaction bundle runs its writes, index rows are collected here and
        # written with one executemany per index table at the end (see deferred_index).
        # A caller may pass its own buffer to gather several bundles' rows and write them
        # itself (:func:`flush_index_buffer`), e.g. the ingest worker across a batch; the
        # care projections and the resource rows of the resources it creates then wait
        # there too (nothing reads the projections before the caller's flush: it writes as
        # the system; a read of a waiting resource by id writes its row first).
        self._index_buffer: IndexBuffer | None = index_buffer
        self._callers_buffer = index_buffer is not None  # new rows wait there too
        self._prefetched: dict[tuple[str, str], list[str]] | None = None  # see prefetch_ids
        self._locked: set[str] = set()
        self._held = held_locks
        self._known = known_ids
        # (type, id) of the updates that found the resource as it was: no version was made.
        self.unchanged: set[tuple[str, str]] = set()

    # ---------------------------------------------------------------- index writes
    @contextmanager
    def deferred_index(self) -> Iterator[None]:
        """Collect the index rows of the writes inside, insert them together on exit.

        A transaction bundle writes a few resources of different types; inserting their
        index rows per resource cost one statement per index table each — on PostgreSQL a
        round trip each.  Nothing reads the index between the writes of a bundle (a GET
        entry calls :meth:`flush_index` first); on an error the buffer is dropped with the
        transaction that the boundary rolls back.
        """
        if self._index_buffer is not None:
            yield
            return
        self._index_buffer = {}
        try:
            yield
            self.flush_index()
        finally:
            self._index_buffer = None

    def flush_index(self) -> None:
        if self._index_buffer:
            flush_index_buffer(self.conn, self.keys, self._index_buffer)

    def _rows_written(self, keys: list[tuple[str, str]] | None = None) -> None:
        """Before a read by id (``keys``) or any other read (None) of resource rows: if a
        row it may need still waits in the caller's buffer (see :meth:`bulk_create`),
        write the waiting rows first."""
        buf = self._index_buffer
        if not buf or not self._callers_buffer:
            return
        waiting = (any(b.row is not None for b in buf.values()) if keys is None else
                   any((b := buf.get(k)) is not None and b.row is not None for k in keys))
        if waiting:
            _write_rows(self.conn, buf)

    def _index(self, items: list[tuple[str, dict[str, Any]]], *, replace: bool) -> None:
        buf = self._index_buffer
        if buf is None:
            indexing.write_index_many(self.conn, items, self.hmac, replace=replace)
            return
        for rtype, res in items:
            key = (rtype, res["id"])
            if replace:
                gone = buf.pop(key, None)  # its index rows were never written
                assert gone is None or gone.row is None, "a replaced resource's row waits"
                indexing.delete_index(self.conn, rtype, res["id"])
            buf[key] = Buffered(rtype, res)

    # ---------------------------------------------------------------- helpers
    def validate(self, resource: Any, expected_type: str | None = None, root: str = "") -> str:
        """Validate; return the resource type.  ``root`` re-roots paths (bundle entries)."""
        issues = validate_resource(resource, expected_type)
        if issues:
            if root:
                rtype = resource.get("resourceType") if isinstance(resource, dict) else None
                issues = [_reroot(i, rtype, root) for i in issues]
            raise InvalidResource(issues)
        rtype = resource["resourceType"]
        assert isinstance(rtype, str)
        return rtype

    def _check_writable(self, resource_type: str) -> None:
        if resource_type in model.READ_ONLY_TYPES:
            raise MethodNotAllowed(
                f"{resource_type} is read-only: only the audit log writes it",
                expression=[resource_type],
            )

    def _seal(self, res: dict[str, Any], vid: int, ts: datetime) -> dict[str, Any]:
        rtype, rid = res["resourceType"], res["id"]
        meta = res.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta["versionId"] = str(vid)
        meta["lastUpdated"] = model.instant(ts)
        res["meta"] = meta
        sealed = self.keys.seal(orjson.dumps(res), f"{rtype}/{rid}".encode())
        return {
            "resource_type": rtype,
            "id": rid,
            "version_id": vid,
            "last_updated": ts,
            "deleted": False,
            "patient_id": model.compartment_patient(res),
            "source_id": self.access.source_id or model.source_of(res),
            "author_org": self.access.author_org,
            "sensitivity": indexing.classify(res),
            "kek_id": sealed.kek_id,
            "dek": sealed.dek,
            "body": sealed.ciphertext,
        }

    def _same_as(self, current: Row[Any], res: dict[str, Any]) -> dict[str, Any] | None:
        """The current version, if ``res`` (an update of it) holds the same content —
        compared as sorted JSON, but for ``meta.versionId``/``lastUpdated`` — and this
        caller would write it under the same source and organisation; else None."""
        if current.deleted or current.body is None or (current.source_id, current.author_org) \
                != (self.access.source_id or model.source_of(res), self.access.author_org):
            return None
        old: dict[str, Any] = orjson.loads(self._open(current))
        return old if _content(old) == _content(res) else None

    def _open(self, row: Row[Any]) -> bytes:
        return open_body(self.keys, row)

    @staticmethod
    def _meta(row: Row[Any] | dict[str, Any]) -> RowMeta:
        g = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
        return RowMeta(
            g("resource_type"), g("id"), g("patient_id"), g("source_id"), g("author_org"),
            g("sensitivity"),
        )

    def _stored(self, row: Row[Any]) -> StoredVersion:
        return StoredVersion(
            row.resource_type,
            row.id,
            row.version_id,
            repo.as_utc(row.last_updated),
            bool(row.deleted),
            None if row.deleted or row.body is None else self._open(row),
            self._meta(row),
        )

    def search_ids(self, resource_type: str, criteria: str, *, limit: int = 2) -> list[str]:
        """Ids matching a conditional query string (``identifier=sys|val``), up to limit."""
        for answers in (self._known, self._prefetched):
            hit = answers.get((resource_type, criteria)) if answers is not None else None
            if hit is not None:
                return hit[:limit]
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if "\x00" in criteria:
            raise BadRequest("conditional criteria must not contain NUL characters")
        if not params:
            raise BadRequest("conditional criteria are empty", expression=[resource_type])
        params = [(k, v) for k, v in params if k not in ("_count", "_sort")]
        fast = self._token_lookup(resource_type, params, limit)
        if fast is not None:
            return fast
        params.append(("_count", str(limit)))
        result = indexing.search(
            self.conn,
            resource_type,
            params,
            base_url=self.base_url,
            hmac=self.hmac,
            restrict=None,  # existence checks must see everything, or duplicates follow
        )
        return list(result.ids)

    # ------------------------------------------------- conditional lookups of a bundle
    def lock(self, key: str) -> None:
        """:func:`repo.lock_key` once per key and transaction (the lock lasts till its end)."""
        if key not in self._locked and key not in self._held:
            repo.lock_key(self.conn, key)
            self._locked.add(key)

    def lock_many(self, keys: list[str]) -> None:
        todo = [k for k in dict.fromkeys(keys) if k not in self._locked and k not in self._held]
        repo.lock_keys(self.conn, todo)
        self._locked.update(todo)

    def prefetch_ids(self, items: list[tuple[str, str]]) -> None:
        """Resolve the plain identifier criteria a bundle will ask for, in one query.

        :meth:`search_ids` answers these from memory until :meth:`end_prefetch` — which the
        bundle calls before its first write, so the answers are what the single lookups
        would have returned at that point.  Call after taking the keys' locks.
        """
        known = self._known or {}
        self._prefetched = self.resolve_ids([i for i in items if i not in known])

    def resolve_ids(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """The ids matching each (type, criteria) of the plain ``param=system|value`` token
        shape (see :meth:`_token_params`), in one query; criteria of another shape are left
        out of the answer."""
        keys: list[tuple[str, str]] = []
        lookups: list[tuple[str, tuple[str, ...], str, str]] = []
        for rtype, criteria in dict.fromkeys(items):
            shape = self._token_shape(rtype, criteria)
            if shape is not None:
                keys.append((rtype, criteria))
                lookups.append((rtype, shape[0], shape[1], shape[2]))
        return dict(zip(keys, repo.ids_by_tokens(self.conn, lookups), strict=True))

    def end_prefetch(self) -> None:
        """Forget the prefetched answers and which locks this bundle took (a later call
        takes them again: re-entrant, and a rolled-back savepoint may have released them)."""
        self._prefetched = None
        self._locked = set()

    def _token_shape(
        self, resource_type: str, criteria: str
    ) -> tuple[tuple[str, ...], str, str] | None:
        if "\x00" in criteria:
            return None
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        params = [(k, v) for k, v in params if k not in ("_count", "_sort")]
        return self._token_params(resource_type, params)

    def _token_lookup(
        self, resource_type: str, params: list[tuple[str, str]], limit: int
    ) -> list[str] | None:
        shape = self._token_params(resource_type, params)
        if shape is None:
            return None
        return repo.ids_by_token(self.conn, resource_type, *shape, limit)

    def _token_params(
        self, resource_type: str, params: list[tuple[str, str]]
    ) -> tuple[tuple[str, ...], str, str] | None:
        """``identifier=system|value`` straight on the token index (None: not that shape).

        Every ingested message resolves its records this way (conditional PUT, If-None-Exist,
        conditional references), and the generic search spent most of its time building
        the query.  Only the plain form is taken here — one parameter, no modifier, no
        escapes, no OR, a system and a value — with the same value normalisation as the
        search builder (``ValueParser.token_frag``); anything else goes the generic way.
        """
        if len(params) != 1 or not is_resource_type(resource_type):
            return None
        name, value = params[0]
        if ":" in name or "\\" in value or "," in value or value.count("|") != 1:
            return None
        system, code = value.split("|")
        if not system or not code:
            return None
        p = searchable_params(resource_type).get(name)
        if (
            p is None
            or p.type != "token"
            or p.stored_as
            or p.fixed_system is not None
            or p.paths[0][-1].key == "telecom"
        ):
            return None
        if p.blind:
            code = self.hmac("t:" + code.strip())
        return p.storage_names, system, code

    # ---------------------------------------------------------------- read
    def read_raw(self, resource_type: str, rid: str) -> StoredVersion:
        _check_address(resource_type, rid)
        self._rows_written([(resource_type, rid)])
        lookup = self._lookup()
        if lookup is None:
            row = repo.get_current(self.conn, resource_type, rid)
        else:
            reader, sql, params = lookup
            row, rows = repo.get_current_with(self.conn, resource_type, rid, sql, params)
            if row is not None:
                reader.adopt_lookup(row.patient_id, rows)
        if row is None:
            raise NotFound(f"{resource_type}/{rid} is not known", expression=[resource_type])
        meta = self._meta(row)
        self.access.authorize("read", resource_type, meta)
        if row.deleted:
            raise Gone(f"{resource_type}/{rid} was deleted", expression=[resource_type])
        self.access.record(self.conn, "read", resource_type, [meta])
        return self._stored(row)

    def _lookup(self) -> tuple[ReadLookup, str, dict[str, Any]] | None:
        """What the access context wants fetched with the rows (the optional seam
        ``ReadLookup``): the context, the SQL expression and its parameters."""
        if not isinstance(self.access, ReadLookup):
            return None
        found = self.access.read_lookup(self.conn.dialect.name)
        return None if found is None else (self.access, *found)

    def read(self, resource_type: str, rid: str) -> dict[str, Any]:
        body = self.read_raw(resource_type, rid).body
        assert body is not None
        result: dict[str, Any] = orjson.loads(body)
        return result

    def vread_raw(self, resource_type: str, rid: str, vid: int) -> StoredVersion:
        _check_address(resource_type, rid)
        self._rows_written([(resource_type, rid)])
        row = repo.get_version(self.conn, resource_type, rid, vid)
        if row is None:
            raise NotFound(
                f"{resource_type}/{rid} has no version {vid}", expression=[resource_type]
            )
        meta = self._meta(row)
        self.access.authorize("vread", resource_type, meta)
        if row.deleted:
            raise Gone(f"version {vid} of {resource_type}/{rid} is a deletion")
        self.access.record(self.conn, "vread", resource_type, [meta])
        return self._stored(row)

    def vread(self, resource_type: str, rid: str, vid: int) -> dict[str, Any]:
        body = self.vread_raw(resource_type, rid, vid).body
        assert body is not None
        result: dict[str, Any] = orjson.loads(body)
        return result

    def load_many(self, keys: list[tuple[str, str]], action: str = "search") -> list[StoredVersion]:
        """Live current versions for (type, id) keys, in the order given (missing skipped).

        Authorisation of each row and one audit record for the lot.
        """
        self._rows_written(keys)
        lookup = self._lookup()
        if lookup is None:
            fetched = repo.get_many(self.conn, keys)
        else:
            reader, sql, params = lookup
            fetched, found = repo.get_many_with(self.conn, keys, sql, params)
            for pid, facts in found.items():
                reader.adopt_lookup(pid, facts)
        rows = {(r.resource_type, r.id): r for r in fetched}
        out: list[StoredVersion] = []
        metas: list[RowMeta] = []
        for key in keys:
            row = rows.get(key)
            if row is None or row.deleted:
                continue
            meta = self._meta(row)
            self.access.authorize("read", key[0], meta)
            metas.append(meta)
            out.append(self._stored(row))
        if metas:
            self.access.record(self.conn, action, keys[0][0] if keys else None, metas)
        return out

    def iter_resources(
        self, resource_type: str, *, since: datetime | None = None, batch: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Every live resource of a type (export, oversight extract).  Audited per batch."""
        self.access.authorize("export", resource_type)
        self._rows_written()
        pending: list[RowMeta] = []
        for row in repo.iter_current(
            self.conn,
            resource_type,
            since=since,
            batch=batch,
            row_filter=self.access.row_filter(resource_table),
        ):
            pending.append(self._meta(row))
            if len(pending) >= batch:
                self.access.record(self.conn, "export", resource_type, pending)
                pending = []
            yield orjson.loads(self._open(row))
        if pending:
            self.access.record(self.conn, "export", resource_type, pending)

    # ---------------------------------------------------------------- write
    def create(
        self, res: dict[str, Any], *, if_none_exist: str | None = None, root: str = ""
    ) -> WriteResult:
        rtype = self.validate(res, root=root)
        self._check_writable(rtype)
        self.access.authorize("create", rtype)
        if if_none_exist:
            repo.lock_key(self.conn, f"{rtype}?{if_none_exist}")
            ids = self.search_ids(rtype, if_none_exist)
            if len(ids) > 1:
                raise PreconditionFailed(
                    "If-None-Exist criteria match more than one resource",
                    expression=["If-None-Exist"],
                )
            if ids:
                existing = self.read_raw(rtype, ids[0])
                assert existing.body is not None
                return WriteResult(
                    orjson.loads(existing.body), False, 200, existing.version_id,
                    existing.last_updated,
                )
        res = dict(res)
        res["id"] = model.new_id()  # FHIR R4 http.html#create: the server assigns the id
        ts = model.now_utc()
        row = self._seal(res, 1, ts)
        repo.insert_current(self.conn, [row])
        self._index([(rtype, res)], replace=False)
        indexing.on_write(self.conn, rtype, res["id"], row["patient_id"], res, new=True)
        self.access.record(self.conn, "create", rtype, [self._meta(row)])
        return WriteResult(res, True, 201, 1, ts)

    def update(
        self,
        resource_type: str,
        rid: str,
        res: dict[str, Any],
        *,
        if_match: str | None = None,
        root: str = "",
        validated: bool = False,
    ) -> WriteResult:
        rtype = resource_type if validated else self.validate(res, resource_type, root=root)
        self._check_writable(rtype)
        if res.get("id") != rid:
            raise BadRequest(
                "the resource id must equal the id in the URL (R4 http.html#update)",
                expression=[f"{rtype}.id"],
            )
        expected = parse_etag(if_match)
        self._rows_written([(rtype, rid)])
        current = repo.get_current(self.conn, rtype, rid, for_update=True)
        ts = model.now_utc()
        res = dict(res)
        if current is None:
            if expected is not None:
                raise PreconditionFailed("If-Match given for a resource that does not exist")
            # Update as create: the client chose the id (R4 http.html#upsert).
            self.access.authorize("create", rtype)
            row = self._seal(res, 1, ts)
            repo.insert_current(self.conn, [row])
            self._index([(rtype, res)], replace=False)
            indexing.on_write(self.conn, rtype, rid, row["patient_id"], res)
            self.access.record(self.conn, "create", rtype, [self._meta(row)])
            return WriteResult(res, True, 201, 1, ts)
        self.access.authorize("update", rtype, self._meta(current))
        if expected is not None and expected != current.version_id:
            raise PreconditionFailed(
                f"version conflict: If-Match names version {expected}, "
                f"current is {current.version_id}",
                expression=["If-Match"],
            )
        same = self._same_as(current, res)
        if same is not None:
            # Nothing would change: no new version (as HAPI FHIR's no-op update), no index
            # rewrite.  An ingest feed re-sends each Patient with every message.
            self.unchanged.add((rtype, rid))
            self.access.record(self.conn, "update", rtype, [self._meta(current)])
            return WriteResult(same, False, 200, current.version_id, current.last_updated)
        vid = current.version_id + 1
        row = self._seal(res, vid, ts)
        repo.archive_current(self.conn, rtype, rid)
        if not repo.replace_current(self.conn, row, current.version_id):
            raise Conflict("the resource was changed concurrently; retry")
        self._index([(rtype, res)], replace=True)
        indexing.on_write(self.conn, rtype, rid, row["patient_id"], res)
        self.access.record(self.conn, "update", rtype, [self._meta(row)])
        return WriteResult(res, bool(current.deleted), 201 if current.deleted else 200, vid, ts)

    def conditional_update(
        self, resource_type: str, criteria: str, res: dict[str, Any], *, root: str = ""
    ) -> WriteResult:
        """PUT Type?criteria (R4 http.html#cond-update)."""
        rtype = self.validate(res, resource_type, root=root)
        self._check_writable(rtype)
        repo.lock_key(self.conn, f"{rtype}?{criteria}")
        ids = self.search_ids(rtype, criteria)
        if len(ids) > 1:
            raise PreconditionFailed(
                "conditional update criteria match more than one resource", expression=[rtype]
            )
        if not ids:
            rid = res.get("id")
            if not isinstance(rid, str):
                res = dict(res)
                res["id"] = model.new_id()
                rid = res["id"]
            return self.update(rtype, rid, res, root=root)
        if "id" in res and res["id"] != ids[0]:
            raise BadRequest(
                "the resource id differs from the matched resource", expression=[f"{rtype}.id"]
            )
        res = {**res, "id": ids[0]}
        return self.update(rtype, ids[0], res, root=root)

    def patch(
        self,
        resource_type: str,
        rid: str,
        ops: Any,
        *,
        if_match: str | None = None,
    ) -> WriteResult:
        """JSON Patch (RFC 6902) on the current version, then a normal update."""
        if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
            raise BadRequest("a JSON Patch document must be an array of operations")
        current = self.read(resource_type, rid)
        # A well-formed patch that cannot be applied to this resource, or would make it
        # invalid, is a 422 (R4 http.html#patch, RFC 5789); a malformed document a 400.
        try:
            patched = jsonpatch.JsonPatch(ops).apply(current)
        except jsonpatch.InvalidJsonPatch:
            raise BadRequest("the patch document is malformed") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            kind = type(exc).__name__
            raise Unprocessable(f"the patch cannot be applied ({kind})") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            raise BadRequest("the patch document is malformed") from None
        if not isinstance(patched, dict) or patched.get("resourceType") != resource_type:
            raise Unprocessable("a patch must not change resourceType")
        if patched.get("id") != rid:
            raise Unprocessable("a patch must not change id", expression=[f"{resource_type}.id"])
        issues = validate_resource(patched, resource_type)
        if issues:
            raise InvalidResult(issues)
        return self.update(resource_type, rid, patched, if_match=if_match, validated=True)

    def delete(self, resource_type: str, rid: str, *, if_match: str | None = None
               ) -> WriteResult | None:
        """Logical delete: a new version marked deleted; history stays.  None: already.
        ``if_match``: only if the current version is the one named (else 412)."""
        _check_address(resource_type, rid)
        self._check_writable(resource_type)
        expected = parse_etag(if_match)
        self._rows_written([(resource_type, rid)])
        current = repo.get_current(self.conn, resource_type, rid, for_update=True)
        if current is None:
            raise NotFound(f"{resource_type}/{rid} is not known", expression=[resource_type])
        meta = self._meta(current)
        self.access.authorize("delete", resource_type, meta)
        if expected is not None and expected != current.version_id:
            raise PreconditionFailed(
                f"version conflict: If-Match names version {expected}, "
                f"current is {current.version_id}",
                expression=["If-Match"],
            )
        if current.deleted:
            return None
        ts = model.now_utc()
        vid = current.version_id + 1
        row = {
            **dict(current._mapping),
            "version_id": vid,
            "last_updated": ts,
            "deleted": True,
            "kek_id": None,
            "dek": None,
            "body": None,
        }
        repo.archive_current(self.conn, resource_type, rid)
        if not repo.replace_current(self.conn, row, current.version_id):
            raise Conflict("the resource was changed concurrently; retry")
        if self._index_buffer is not None:
            self._index_buffer.pop((resource_type, rid), None)
        indexing.delete_index(self.conn, resource_type, rid)
        indexing.on_write(self.conn, resource_type, rid, current.patient_id, None)
        self.access.record(self.conn, "delete", resource_type, [meta])
        stub = {"resourceType": resource_type, "id": rid}
        return WriteResult(stub, False, 200, vid, ts)

    # ---------------------------------------------------------------- history
    def history(
        self,
        resource_type: str | None,
        rid: str | None,
        *,
        since: datetime | None = None,
        before: datetime | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> tuple[list[StoredVersion], int]:
        action = "history" if rid else ("history-type" if resource_type else "history-system")
        if rid is not None and resource_type is not None:
            _check_address(resource_type, rid)
        if resource_type is not None:
            if not is_resource_type(resource_type):
                raise NotFound(f"unknown resource type {resource_type}")
            self.access.authorize(action, resource_type)
        else:
            self.access.authorize(action, "*")
        self._rows_written()
        rows, total = repo.history(
            self.conn,
            resource_type=resource_type,
            rid=rid,
            since=since,
            before=before,
            count=count,
            offset=offset,
            row_filter=self.access.row_filter(resource_table),
        )
        if rid is not None and total == 0:
            raise NotFound(f"{resource_type}/{rid} is not known")
        metas = [self._meta(r) for r in rows]
        self.access.record(self.conn, action, resource_type, metas)  # empty pages too
        return [self._stored(r) for r in rows], total

    # ---------------------------------------------------------------- $everything
    def everything(
        self,
        patient_id: str,
        *,
        types: list[str] | None = None,
        since: datetime | None = None,
        count: int = 100,
        offset: int = 0,
        after: tuple[str, str] | None = None,
    ) -> tuple[list[StoredVersion], int]:
        """Patient/$everything: the Patient and its compartment, one page (R4 patient-
        operation-everything).  Resources merely referenced (practitioners…) are not
        added: they are not the patient's data and are readable on their own."""
        _check_address("Patient", patient_id)
        self._rows_written()
        patient = repo.get_current(self.conn, "Patient", patient_id)
        if patient is None:
            raise NotFound(f"Patient/{patient_id} is not known", expression=["Patient"])
        self.access.authorize("everything", "Patient", self._meta(patient))
        if patient.deleted:
            raise Gone(f"Patient/{patient_id} was deleted")
        rows, total = repo.compartment(
            self.conn,
            patient_id,
            types=types,
            since=since,
            count=count,
            offset=offset,
            after=after,
            row_filter=self.access.row_filter(resource_table),
        )
        metas = [self._meta(r) for r in rows]
        self.access.record(self.conn, "everything", "Patient", metas)
        return [self._stored(r) for r in rows], total

    # ---------------------------------------------------------------- bundles
    def transaction(self, bundle: Any, *, read_matched: bool = True) -> dict[str, Any]:
        from usmis.fhir.bundles import run_transaction

        return run_transaction(self, bundle, read_matched=read_matched)

    def batch(self, bundle: Any) -> dict[str, Any]:
        from usmis.fhir.bundles import run_batch

        return run_batch(self, bundle)

    # bulk path used by transactions: creates without conditions in one executemany
    def bulk_create(self, items: list[dict[str, Any]]) -> list[WriteResult]:
        """Insert validated new resources (ids already assigned) in one statement each
        for the resource table and each index table."""
        if not items:
            return []
        ts = model.now_utc()
        rows = []
        for res in items:
            rtype = res["resourceType"]
            self._check_writable(rtype)
            self.access.authorize("create", rtype)
            rows.append(self._seal(res, 1, ts))
        buf = self._index_buffer
        if buf is not None and self._callers_buffer:
            # The caller's buffer takes the resource rows too (one insert per batch, not
            # per bundle); a read of one of them by id writes the waiting rows first.
            for res, row in zip(items, rows, strict=True):
                buf[(res["resourceType"], res["id"])] = Buffered(
                    res["resourceType"], res, True, row["patient_id"], row)
        else:
            repo.insert_current(self.conn, rows)
            self._index([(r["resourceType"], r) for r in items], replace=False)
            indexing.on_create_many(self.conn, [(res["resourceType"], res["id"],
                                                 row["patient_id"], res)
                                                for res, row in zip(items, rows, strict=True)])
        self.access.record(
            self.conn, "create", items[0]["resourceType"], [self._meta(r) for r in rows]
        )
        return [WriteResult(res, True, 201, 1, ts) for res in items]


def open_body(keys: Keyring, row: Row[Any]) -> bytes:
    """A stored version's JSON, decrypted (bound to its ``Type/id``, as sealed)."""
    return keys.open(row.kek_id, row.dek, row.body, f"{row.resource_type}/{row.id}".encode())


def _check_address(resource_type: str, rid: str) -> None:
    """404 for a type or id that cannot exist (before it reaches SQL)."""
    if not is_resource_type(resource_type):
        raise NotFound(f"unknown resource type {resource_type}", expression=[resource_type])
    if not ID_RE.fullmatch(rid):
        raise NotFound(f"{resource_type} ids are [A-Za-z0-9-.]{{1,64}}", expression=["id"])


def _reroot(issue: Issue, rtype: Any, root: str) -> Issue:
    expr = issue.expression
    if isinstance(rtype, str) and (expr == rtype or expr.startswith(rtype + ".")):
        expr = root + expr[len(rtype) :]
    elif not expr:
        expr = root
    else:
        expr = f"{root}.{expr}"
    return dataclasses.replace(issue, expression=expr)


__all__ = [
    "FhirService", "IndexBuffer", "StoredVersion", "UsmisError", "WriteResult",
    "flush_index_buffer", "parse_etag",
]
