"""Bundles: transaction and batch processing (R4 http.html#transaction), and the
searchset / history Bundles the API returns.

Response Bundles are assembled from the stored JSON bytes without parsing them again
(a page of 50 resources is a concatenation), except when ``_elements``/``_summary`` ask
for a subset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from usmis.fhir import model
from usmis.fhir.service import FhirService, StoredVersion, WriteResult, parse_etag
from usmis.fhir.validation import is_resource_type
from usmis.kit.errors import BadRequest, NotFound, PreconditionFailed, UsmisError

_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
# R4 http.html#trules: DELETE, then POST, then PUT/PATCH, then GET/HEAD
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3, "GET": 4, "HEAD": 4}


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource_type: str
    rid: str | None
    vid: int | None
    query: str
    resource: Any = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    target_id: str | None = None  # id assigned or matched before execution
    matched_existing: bool = False
    creates: bool = False  # a conditional PUT that matched nothing: a create, in the bulk insert
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"


def _parse_entry(i: int, entry: Any) -> _Entry:
    path = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict):
        raise BadRequest("a Bundle entry must be an object", expression=[path])
    req = entry.get("request")
    if not isinstance(req, dict):
        raise BadRequest("entry.request is required", expression=[f"{path}.request"])
    method = req.get("method")
    url = req.get("url")
    if method not in _ORDER:
        raise BadRequest("request.method is not supported", expression=[f"{path}.request.method"])
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("request.url is required", expression=[f"{path}.request.url"])
    url = url.strip()
    for prefix in ("http://", "https://"):
        if url.startswith(prefix) and "/fhir/" in url:
            url = url.split("/fhir/", 1)[1]
    url = url.lstrip("/")
    base, _, query = url.partition("?")
    parts = base.split("/")
    rtype = parts[0]
    if not is_resource_type(rtype):
        raise BadRequest(
            "request.url names no R4 resource type", expression=[f"{path}.request.url"]
        )
    rid = parts[1] if len(parts) > 1 and parts[1] else None
    vid: int | None = None
    if len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
        vid = int(parts[3])
    elif len(parts) > 2:
        raise BadRequest("request.url is not supported here", expression=[f"{path}.request.url"])
    e = _Entry(i, str(method), url, rtype, rid, vid, query)
    e.resource = entry.get("resource")
    fu = entry.get("fullUrl")
    e.full_url = fu if isinstance(fu, str) and fu else None
    ine = req.get("ifNoneExist")
    e.if_none_exist = ine if isinstance(ine, str) and ine else None
    im = req.get("ifMatch")
    e.if_match = im if isinstance(im, str) and im else None
    if e.method in ("POST", "PUT") and not isinstance(e.resource, dict):
        raise BadRequest("entry.resource is required for POST and PUT", expression=[path])
    if e.method == "PATCH" and e.rid is None:
        raise BadRequest("PATCH needs Type/id in request.url", expression=[f"{path}.request.url"])
    return e


def _check_bundle(bundle: Any, kind: str) -> list[Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("the body must be a Bundle", expression=["Bundle"])
    if bundle.get("type") != kind:
        raise BadRequest(f"Bundle.type must be {kind}", expression=["Bundle.type"])
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", expression=["Bundle.entry"])
    return entries


def _response(result: WriteResult, with_resource: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "response": {
            "status": _STATUS_TEXT.get(result.status, str(result.status)),
            "location": result.location,
            "etag": result.etag,
            "lastModified": model.instant(result.last_updated),
        }
    }
    if with_resource:
        out["resource"] = result.resource
    return out


def _with_path(exc: UsmisError, path: str) -> UsmisError:
    """Name the failing entry (validation issues are already rooted at it)."""
    if not exc.message.startswith("Bundle.entry["):
        exc.message = f"{path}: {exc.message}"
        exc.args = (exc.message,)
    if not exc.expression:
        exc.expression = [path]
    return exc


def run_transaction(
    svc: FhirService, bundle: Any, *, return_resources: bool = False,
    read_matched: bool = True,
) -> dict[str, Any]:
    """All entries or none: any error raises, and the boundary rolls back.

    ``read_matched=False``: a conditional create that found its resource answers with its
    location only (``Type/id``, no version), unread — for a caller that needs no more
    (the ingest worker, writing as the system)."""
    raw = _check_bundle(bundle, "transaction")
    entries = [_parse_entry(i, e) for i, e in enumerate(raw)]
    refmap: dict[str, str] = {}
    try:
        _decide(svc, entries, refmap)
    finally:
        svc.end_prefetch()  # the answers are only true until the first write below

    # 3. Execute in the order the spec prescribes; creates go in one bulk insert, and the
    #    index rows of all writes in one insert per index table at the end.
    with svc.deferred_index():
        _execute(svc, entries, return_resources, read_matched)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [e.response for e in entries],
    }


def _decide(svc: FhirService, entries: list[_Entry], refmap: dict[str, str]) -> None:
    # 0. The conditional keys' locks in one round trip, then every plain identifier
    #    criterion of the bundle in one query (the same answers as one by one: no write
    #    happens before step 3).
    locks: list[str] = []
    wanted: list[tuple[str, str]] = []
    for e in entries:
        if e.method == "POST" and e.if_none_exist and isinstance(e.resource, dict):
            rt = e.resource.get("resourceType")
            if isinstance(rt, str) and is_resource_type(rt):
                locks.append(f"{rt}?{e.if_none_exist}")
                wanted.append((rt, e.if_none_exist))
        elif e.method == "PUT" and e.rid is None and e.query:
            locks.append(f"{e.resource_type}?{e.query}")
            wanted.append((e.resource_type, e.query))
    if len(wanted) > 1:
        svc.lock_many(locks)
        svc.prefetch_ids(wanted)

    # 1. Decide every target id first, so references between entries can be rewritten.
    for e in entries:
        try:
            if e.method == "POST":
                rtype = svc.validate(e.resource, e.resource_type, root=f"{e.path}.resource")
                if e.if_none_exist:
                    svc.lock(f"{rtype}?{e.if_none_exist}")
                    ids = svc.search_ids(rtype, e.if_none_exist)
                    if len(ids) > 1:
                        raise PreconditionFailed("ifNoneExist matches more than one resource")
                    if ids:
                        e.target_id, e.matched_existing = ids[0], True
                if e.target_id is None:
                    e.target_id = model.new_id()
            elif e.method == "PUT":
                svc.validate(e.resource, e.resource_type, root=f"{e.path}.resource")
                if e.rid is None:
                    if not e.query:
                        raise BadRequest("PUT needs Type/id or Type?criteria")
                    svc.lock(f"{e.resource_type}?{e.query}")
                    ids = svc.search_ids(e.resource_type, e.query)
                    if len(ids) > 1:
                        raise PreconditionFailed(
                            "conditional update matches more than one resource")
                    given = e.resource.get("id")
                    e.target_id = ids[0] if ids else (given if given else model.new_id())
                    # Nothing matched and no id given: a new resource under a fresh id.
                    e.creates = not ids and not given
                else:
                    e.target_id = e.rid
            elif e.method == "DELETE" and e.rid is None:
                if not e.query:
                    raise BadRequest("DELETE needs Type/id or Type?criteria")
                ids = svc.search_ids(e.resource_type, e.query)
                if len(ids) > 1:
                    raise PreconditionFailed("conditional delete matches more than one resource")
                e.target_id = ids[0] if ids else None
            else:
                e.target_id = e.rid
        except UsmisError as exc:
            raise _with_path(exc, e.path) from None
        if e.full_url and e.target_id and e.method in ("POST", "PUT"):
            refmap[e.full_url] = f"{e.resource_type}/{e.target_id}"

    # 2. Rewrite urn:uuid (and fullUrl) references; resolve conditional references.
    cond_cache: dict[str, str] = {}

    def resolve(ref: str) -> str | None:
        if ref in refmap:
            return refmap[ref]
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise BadRequest("a reference names a urn that no entry has as fullUrl")
        if "?" in ref and "/" not in ref.split("?", 1)[0]:
            if ref not in cond_cache:
                rtype, _, query = ref.partition("?")
                if not is_resource_type(rtype):
                    raise BadRequest("a conditional reference names no resource type")
                ids = svc.search_ids(rtype, query)
                if len(ids) != 1:
                    raise BadRequest("a conditional reference must match exactly one resource")
                cond_cache[ref] = f"{rtype}/{ids[0]}"
            return cond_cache[ref]
        return None

    for e in entries:
        if isinstance(e.resource, dict):
            try:
                model.rewrite_references(e.resource, resolve)
            except UsmisError as exc:
                raise _with_path(exc, e.path) from None



def _execute(svc: FhirService, entries: list[_Entry], return_resources: bool,
             read_matched: bool = True) -> None:
    creates: list[_Entry] = []
    matched: list[_Entry] = []
    for e in sorted(entries, key=lambda x: (_ORDER[x.method], x.index)):
        try:
            if e.method == "DELETE":
                if e.target_id is None:
                    e.response = {"response": {"status": "204 No Content"}}
                    continue
                try:
                    svc.delete(e.resource_type, e.target_id, if_match=e.if_match)
                except NotFound:
                    pass
                e.response = {"response": {"status": "204 No Content"}}
            elif e.method == "POST":
                if e.matched_existing:
                    matched.append(e)  # answered together below: one read for them all
                    continue
                e.resource = {**e.resource, "id": e.target_id}
                creates.append(e)
            elif e.creates:
                e.resource = {**e.resource, "id": e.target_id}
                creates.append(e)
            elif e.method in ("PUT", "PATCH") and creates:
                _flush_creates(svc, creates, return_resources)
                creates = []
                _put_or_patch(svc, e, return_resources)
            elif e.method in ("PUT", "PATCH"):
                _put_or_patch(svc, e, return_resources)
            else:
                if creates:
                    _flush_creates(svc, creates, return_resources)
                    creates = []
                svc.flush_index()  # a search entry must see this bundle's writes
                e.response = _get_entry(svc, e)
        except UsmisError as exc:
            raise _with_path(exc, e.path) from None
    if creates:
        _flush_creates(svc, creates, return_resources)
    if matched and read_matched:
        _answer_matched(svc, matched)
    elif matched:
        for e in matched:
            e.response = {"response": {"status": "200 OK",
                                       "location": f"{e.resource_type}/{e.target_id}"}}


def _answer_matched(svc: FhirService, matched: list[_Entry]) -> None:
    """A conditional create that found its resource answers 200 with that resource's
    current version, read (and authorised, and audited) per type in one statement, after
    the bundle's writes: should a later entry of the same bundle update that resource,
    the answer names the updated version."""
    for rtype in dict.fromkeys(e.resource_type for e in matched):
        group = [e for e in matched if e.resource_type == rtype]
        if len(group) == 1:  # the statement of one read is prepared once; of many, built
            try:
                found = {str(group[0].target_id): svc.read_raw(rtype, str(group[0].target_id))}
            except UsmisError as exc:
                raise _with_path(exc, group[0].path) from None
        else:
            found = {sv.id: sv for sv in svc.load_many(
                [(rtype, str(e.target_id)) for e in group], action="read")}
        for e in group:
            cur = found.get(str(e.target_id))
            if cur is None:
                raise _with_path(NotFound(f"{rtype}/{e.target_id} is not known",
                                          expression=[rtype]), e.path)
            e.response = {
                "response": {
                    "status": "200 OK",
                    "location": f"{rtype}/{cur.id}/_history/{cur.version_id}",
                    "etag": f'W/"{cur.version_id}"',
                    "lastModified": model.instant(cur.last_updated),
                }
            }


def _flush_creates(svc: FhirService, creates: list[_Entry], with_resource: bool) -> None:
    results = svc.bulk_create([e.resource for e in creates])
    for e, r in zip(creates, results, strict=True):
        e.response = _response(r, with_resource)


def _put_or_patch(svc: FhirService, e: _Entry, with_resource: bool) -> None:
    assert e.target_id is not None
    if e.method == "PUT":
        res = {**e.resource, "id": e.target_id}
        result = svc.update(  # validated in _decide
            e.resource_type, e.target_id, res, if_match=e.if_match, validated=True
        )
    else:
        result = svc.patch(e.resource_type, e.target_id, _patch_ops(e), if_match=e.if_match)
    e.response = _response(result, with_resource)


def _patch_ops(e: _Entry) -> Any:
    """Bundle PATCH: a Binary whose data is the base64 JSON Patch (R4 http.html#patch)."""
    import base64
    import binascii

    res = e.resource
    if isinstance(res, dict) and res.get("resourceType") == "Binary":
        try:
            return orjson.loads(base64.b64decode(str(res.get("data", "")), validate=True))
        except (binascii.Error, orjson.JSONDecodeError, ValueError):
            raise BadRequest("the Binary does not hold a JSON Patch") from None
    if isinstance(res, list):
        return res
    raise BadRequest("PATCH entries carry a Binary with a JSON Patch")


def _get_entry(svc: FhirService, e: _Entry) -> dict[str, Any]:
    if e.rid is not None:
        sv = (
            svc.vread_raw(e.resource_type, e.rid, e.vid)
            if e.vid is not None
            else svc.read_raw(e.resource_type, e.rid)
        )
        assert sv.body is not None
        return {
            "resource": orjson.loads(sv.body),
            "response": {"status": "200 OK", "etag": f'W/"{sv.version_id}"'},
        }
    params = parse_qsl(e.query, keep_blank_values=True)
    page = search_bundle(svc, e.resource_type, params)
    return {"resource": orjson.loads(page), "response": {"status": "200 OK"}}


def run_batch(svc: FhirService, bundle: Any, *, return_resources: bool = False) -> dict[str, Any]:
    """Each entry on its own (a savepoint each): failures become entry outcomes."""
    raw = _check_bundle(bundle, "batch")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        sp = svc.conn.begin_nested()
        try:
            e = _parse_entry(i, item)
            if e.method == "POST":
                r = svc.create(
                    e.resource, if_none_exist=e.if_none_exist, root=f"{e.path}.resource"
                )
                resp = _response(r, return_resources)
                if not r.created:
                    resp["response"]["status"] = "200 OK"
            elif e.method == "PUT":
                if e.rid is None:
                    r = svc.conditional_update(
                        e.resource_type, e.query, e.resource, root=f"{e.path}.resource"
                    )
                else:
                    r = svc.update(
                        e.resource_type, e.rid, e.resource, if_match=e.if_match,
                        root=f"{e.path}.resource",
                    )
                resp = _response(r, return_resources)
            elif e.method == "PATCH":
                assert e.rid is not None
                r = svc.patch(e.resource_type, e.rid, _patch_ops(e), if_match=e.if_match)
                resp = _response(r, return_resources)
            elif e.method == "DELETE":
                if e.rid is None:
                    raise BadRequest("DELETE in a batch needs Type/id")
                svc.delete(e.resource_type, e.rid, if_match=e.if_match)
                resp = {"response": {"status": "204 No Content"}}
            else:
                resp = _get_entry(svc, e)
            sp.commit()
            out.append(resp)
        except UsmisError as exc:
            sp.rollback()
            exc = _with_path(exc, f"Bundle.entry[{i}]")
            out.append(
                {
                    "response": {
                        "status": str(exc.status),
                        "outcome": model.outcome_of_error(exc),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


# ------------------------------------------------------------------ response Bundles
def _entry_bytes(entry: dict[str, Any], body: bytes | None) -> bytes:
    head = orjson.dumps(entry)
    if body is None:
        return head
    return head[:-1] + b',"resource":' + body + b"}"


def _subset(body: bytes, elements: list[str] | None, summary: str | None) -> bytes:
    res = orjson.loads(body)
    if elements:
        keep = {"resourceType", "id", "meta", *elements}
        res = {k: v for k, v in res.items() if k in keep}
    elif summary in ("true", "data"):
        # Without isSummary metadata (fhirclient has none) _summary=true is served as
        # _summary=data: everything but the narrative.  Documented in docs/fhir.md.
        res.pop("text", None)
    elif summary == "text":
        res = {k: v for k, v in res.items() if k in ("resourceType", "id", "meta", "text")}
    else:
        return body
    meta = dict(res.get("meta") or {})
    tags = list(meta.get("tag") or [])
    tags.append(
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
         "code": "SUBSETTED"}
    )
    meta["tag"] = tags
    res["meta"] = meta
    return orjson.dumps(res)


def assemble(
    bundle_type: str,
    entries: list[bytes],
    *,
    total: int | None = None,
    links: list[tuple[str, str]] | None = None,
) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": model.new_id(),
        "meta": {"lastUpdated": model.instant(model.now_utc())},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out = orjson.dumps(head)
    if not entries:  # R4 JSON has no empty arrays: no entry at all
        return out
    return out[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def search_bundle(
    svc: FhirService,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    strict: bool = True,
) -> bytes:
    """A searchset page through usmis.fhir.search; bodies loaded and authorised here."""
    from usmis.fhir import indexing

    if not is_resource_type(resource_type):
        raise NotFound(f"unknown resource type {resource_type}", expression=[resource_type])
    svc.access.authorize("search", resource_type)
    result = indexing.search(
        svc.conn,
        resource_type,
        params,
        base_url=svc.base_url,
        hmac=svc.hmac,
        restrict=svc.access.row_filter,  # a callable: chained and _has targets restricted too
        strict=strict,
    )
    links = [("self", result.self_link)]
    if result.next_link:
        links.append(("next", result.next_link))
    if result.previous_link:
        links.append(("previous", result.previous_link))
    if result.summary == "count":
        svc.access.record(svc.conn, "search", resource_type, [], query=_query_text(params))
        return assemble("searchset", [], total=result.total, links=links)
    keys = [(resource_type, i) for i in result.ids]
    matches = svc.load_many(keys, "search")
    includes = svc.load_many(list(result.includes), "search") if result.includes else []
    if not matches and not includes:  # a search that found nothing is recorded too
        svc.access.record(svc.conn, "search", resource_type, [], query=_query_text(params))
    entries: list[bytes] = []
    for sv, mode in [(m, "match") for m in matches] + [(i, "include") for i in includes]:
        assert sv.body is not None
        body = sv.body
        if result.elements or result.summary not in (None, "false"):
            body = _subset(body, result.elements, result.summary)
        entry = {"fullUrl": f"{svc.base_url}/{sv.resource_type}/{sv.id}",
                 "search": {"mode": mode}}
        entries.append(_entry_bytes(entry, body))
    if result.warnings:
        oo = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "warning", "code": "not-supported", "diagnostics": w}
                for w in result.warnings
            ],
        }
        entries.append(
            _entry_bytes({"search": {"mode": "outcome"}}, orjson.dumps(oo))
        )
    return assemble("searchset", entries, total=result.total, links=links)


def _query_text(params: list[tuple[str, str]]) -> str:
    """Parameter names only: values may be identifiers (never logged or audited raw)."""
    return "&".join(sorted({k for k, _ in params}))


def history_bundle(
    svc: FhirService, versions: list[StoredVersion], total: int, links: list[tuple[str, str]]
) -> bytes:
    entries = []
    for v in versions:
        method = "DELETE" if v.deleted else ("POST" if v.version_id == 1 else "PUT")
        url = f"{v.resource_type}/{v.id}" if method != "POST" else v.resource_type
        status = {"DELETE": "204 No Content", "POST": "201 Created"}.get(method, "200 OK")
        entry = {
            "fullUrl": f"{svc.base_url}/{v.resource_type}/{v.id}",
            "request": {"method": method, "url": url},
            "response": {
                "status": status,
                "etag": f'W/"{v.version_id}"',
                "lastModified": model.instant(v.last_updated),
            },
        }
        entries.append(_entry_bytes(entry, v.body))
    return assemble("history", entries, total=total, links=links)


def everything_bundle(
    svc: FhirService, versions: list[StoredVersion], total: int, links: list[tuple[str, str]]
) -> bytes:
    entries = []
    for v in versions:
        entry = {"fullUrl": f"{svc.base_url}/{v.resource_type}/{v.id}", "search": {"mode": "match"}}
        entries.append(_entry_bytes(entry, v.body))
    return assemble("searchset", entries, total=total, links=links)


__all__ = [
    "assemble",
    "everything_bundle",
    "history_bundle",
    "parse_etag",
    "run_batch",
    "run_transaction",
    "search_bundle",
]
