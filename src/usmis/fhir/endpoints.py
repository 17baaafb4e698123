"""FHIR R4 REST endpoints (base ``/fhir``): HTTP in, service call, HTTP out.

Endpoints are async only to read the body; the work runs in the thread pool inside one
unit of work (``usmis.kit.db.unit_of_work``), so a write, its index rows and its audit entries
commit together.  Every error leaves as an OperationOutcome (``usmis.app``'s handler).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import Engine

from usmis.access.deps import access_context
from usmis.fhir import bundles, model
from usmis.fhir.context import AccessContext
from usmis.fhir.service import FhirService, StoredVersion, WriteResult
from usmis.fhir.validation import DATETIME_RE, ID_RE, is_resource_type
from usmis.kit.crypto import Keyring
from usmis.kit.db import unit_of_work
from usmis.kit.errors import BadRequest, UsmisError

FHIR_JSON = "application/fhir+json"
router = APIRouter(prefix="/fhir", tags=["fhir"])


class UnsupportedMediaType(UsmisError):
    status = 415
    code = "not-supported"


# ---------------------------------------------------------------- access seam
# The request's policy decision point + audit context (usmis.access, issue 6); it
# implements usmis.fhir.context.AccessContext.
ACCESS = Depends(access_context)


# ---------------------------------------------------------------- helpers
def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _keys(request: Request) -> Keyring:
    keys: Keyring = request.app.state.keyring
    return keys


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _svc(request: Request, conn: Any, access: AccessContext) -> FhirService:
    return FhirService(conn, _keys(request), access, base_url=_base(request))


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("the request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None


def _fhir(content: bytes | dict[str, Any], status: int = 200, **headers: str) -> Response:
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers or None)


def _http_date(ts: datetime) -> str:
    return format_datetime(ts.astimezone(UTC), usegmt=True)


def _prefer(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(","):
        k, _, v = part.strip().partition("=")
        if k.strip() == "return":
            return v.strip().strip('"')
    return "representation"


def _handling(request: Request) -> bool:
    """Prefer: handling=strict|lenient (R4 search.html#errors).  Lenient is the default:
    unknown parameters are ignored and reported in an OperationOutcome entry, as real
    clients send vendor parameters (fhirpy sends ``_totalMethod``)."""
    return "handling=strict" in request.headers.get("prefer", "")


def _write_response(request: Request, result: WriteResult, base: str) -> Response:
    headers = {
        "Location": f"{base}/{result.location}",
        "ETag": result.etag,
        "Last-Modified": _http_date(result.last_updated),
    }
    pref = _prefer(request)
    if pref == "minimal":
        return Response(status_code=result.status, headers=headers)
    if pref == "OperationOutcome":
        verb = "created" if result.created else "updated"
        return _fhir(model.information(f"resource {verb}"), result.status, **headers)
    return _fhir(result.resource, result.status, **headers)


def _read_response(v: StoredVersion) -> Response:
    assert v.body is not None
    return _fhir(
        v.body, 200, ETag=f'W/"{v.version_id}"', **{"Last-Modified": _http_date(v.last_updated)}
    )


def _int_param(params: dict[str, str], name: str, default: int, cap: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer", expression=[name])
    return min(int(raw), cap)


def _instant_param(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not DATETIME_RE.fullmatch(raw):
        raise BadRequest(f"{name} must be a FHIR instant", expression=[name])
    text = raw.replace("Z", "+00:00")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:  # the right shape, not a real time (2024-02-31, 24:00)
        raise BadRequest(f"{name} is not a real date and time", expression=[name]) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts


def _page_links(
    request: Request, path: str, offset: int, count: int, total: int,
    pin: tuple[str, str] | None = None,
) -> list[tuple[str, str]]:
    """self/next/previous by ``_offset``; ``pin``: a parameter every link carries (the
    history's ``_at``, so its pages stay one list while new versions are written)."""
    keep = [(k, v) for k, v in request.query_params.multi_items()
            if k != "_offset" and (pin is None or k != pin[0])]
    if pin is not None:
        keep.append(pin)

    def url(off: int) -> str:
        return f"{_base(request)}{path}?" + urlencode([*keep, ("_offset", str(off))])

    links = [("self", url(offset))]
    if offset + count < total:
        links.append(("next", url(offset + count)))
    if offset > 0:
        links.append(("previous", url(max(0, offset - count))))
    return links


# ---------------------------------------------------------------- metadata
@router.get("/metadata")
def metadata(request: Request) -> Response:
    from usmis.fhir.capability import capability_statement

    return _fhir(capability_statement(_base(request)))


# ---------------------------------------------------------------- system level
@router.post("")
@router.post("/")
async def bundle(request: Request, access: AccessContext = ACCESS) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("POST /fhir takes a transaction or batch Bundle", expression=["Bundle"])
    rep = _prefer(request) == "representation" and "prefer" in request.headers

    def work() -> Response:
        with unit_of_work(_engine(request), write=True) as conn:
            svc = _svc(request, conn, access)
            if body.get("type") == "batch":
                out = bundles.run_batch(svc, body, return_resources=rep)
            else:
                out = bundles.run_transaction(svc, body, return_resources=rep)
        return _fhir(out)

    return await run_in_threadpool(work)


@router.get("/_history")
def history_system(request: Request, access: AccessContext = ACCESS) -> Response:
    return _history(request, access, None, None)


def _history(
    request: Request, access: AccessContext, rtype: str | None, rid: str | None
) -> Response:
    params = dict(request.query_params)
    count = _int_param(params, "_count", 50, 1000)
    offset = _int_param(params, "_offset", 0, 10**9)
    since = _instant_param(params, "_since")
    # Newest first, paged by offset: a version written meanwhile would shift every later
    # page by one.  The first page pins the list (``_at`` = its time, unless given) and
    # its links carry the pin: versions are never removed, so the pages stay one list.
    # (an instant has milliseconds: a millisecond on, so that nothing written already is out)
    pin = ("_at", params.get("_at") or model.instant(model.now_utc() + timedelta(milliseconds=1)))
    before = _instant_param(dict([pin]), "_at")
    with unit_of_work(_engine(request), write=False) as conn:
        svc = _svc(request, conn, access)
        versions, total = svc.history(
            rtype, rid, since=since, before=before, count=count, offset=offset
        )
        path = "/_history" if rtype is None else (
            f"/{rtype}/_history" if rid is None else f"/{rtype}/{rid}/_history"
        )
        return _fhir(
            bundles.history_bundle(
                svc, versions, total, _page_links(request, path, offset, count, total, pin)
            )
        )


# ---------------------------------------------------------------- type level
@router.get("/{rtype}/_history")
def history_type(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    return _history(request, access, rtype, None)


@router.post("/{rtype}/$validate")
async def validate_type(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    body = await _json_body(request)
    from usmis.fhir.operations.validate import validate_operation

    return _fhir(validate_operation(rtype, body, None))


@router.post("/{rtype}/_search")
async def search_post(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    # application/x-www-form-urlencoded (R4 http.html#search); parsed here, not with
    # python-multipart, which this service does not otherwise need.
    raw = await request.body()
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True) if raw.strip() else []
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the search form body is not valid url-encoded text") from None
    params = [*request.query_params.multi_items(), *form]
    return await run_in_threadpool(_search, request, access, rtype, params)


@router.get("/{rtype}/_search")
def search_get_alias(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    return _search(request, access, rtype, list(request.query_params.multi_items()))


@router.get("/{rtype}")
def search_get(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    return _search(request, access, rtype, list(request.query_params.multi_items()))


def _search(
    request: Request, access: AccessContext, rtype: str, params: list[tuple[str, str]]
) -> Response:
    params = [(k, v) for k, v in params if k != "_format"]
    if any("\x00" in k or "\x00" in v for k, v in params):
        raise BadRequest("search parameters must not contain NUL characters")
    with unit_of_work(_engine(request), write=False) as conn:
        svc = _svc(request, conn, access)
        return _fhir(bundles.search_bundle(svc, rtype, params, strict=_handling(request)))


@router.post("/{rtype}")
async def create(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    body = await _json_body(request)
    if isinstance(body, dict) and body.get("resourceType") not in (None, rtype):
        raise BadRequest(f"resourceType must be {rtype}", expression=["resourceType"])
    if_none_exist = request.headers.get("if-none-exist")

    def work() -> Response:
        with unit_of_work(_engine(request), write=True) as conn:
            svc = _svc(request, conn, access)
            svc.validate(body, rtype)
            result = svc.create(body, if_none_exist=if_none_exist)
        return _write_response(request, result, _base(request))

    return await run_in_threadpool(work)


@router.put("/{rtype}")
async def conditional_update(
    rtype: str, request: Request, access: AccessContext = ACCESS
) -> Response:
    body = await _json_body(request)
    criteria = request.url.query
    if not criteria:
        raise BadRequest("PUT on a type needs search criteria (conditional update)")

    def work() -> Response:
        with unit_of_work(_engine(request), write=True) as conn:
            result = _svc(request, conn, access).conditional_update(rtype, criteria, body)
        return _write_response(request, result, _base(request))

    return await run_in_threadpool(work)


@router.delete("/{rtype}")
def conditional_delete(rtype: str, request: Request, access: AccessContext = ACCESS) -> Response:
    criteria = request.url.query
    if not criteria:
        raise BadRequest("DELETE on a type needs search criteria (conditional delete)")
    with unit_of_work(_engine(request), write=True) as conn:
        svc = _svc(request, conn, access)
        ids = svc.search_ids(rtype, criteria)
        if len(ids) > 1:
            from usmis.kit.errors import PreconditionFailed

            raise PreconditionFailed("conditional delete criteria match more than one resource")
        for rid in ids:
            svc.delete(rtype, rid)
    return Response(status_code=204)


# ---------------------------------------------------------------- instance level
@router.get("/{rtype}/{rid}/_history/{vid}")
def vread(rtype: str, rid: str, vid: str, request: Request, access: AccessContext = ACCESS
          ) -> Response:
    if not vid.isdigit():
        raise BadRequest("a version id is a positive integer", expression=["vid"])
    with unit_of_work(_engine(request), write=False) as conn:
        return _read_response(_svc(request, conn, access).vread_raw(rtype, rid, int(vid)))


@router.get("/{rtype}/{rid}/_history")
def history_instance(rtype: str, rid: str, request: Request, access: AccessContext = ACCESS
                     ) -> Response:
    return _history(request, access, rtype, rid)


@router.get("/Patient/{rid}/$everything")
def everything(rid: str, request: Request, access: AccessContext = ACCESS) -> Response:
    params = dict(request.query_params)
    count = _int_param(params, "_count", 100, 1000)
    offset = _int_param(params, "_offset", 0, 10**9)
    since = _instant_param(params, "_since")
    types = [t for t in params.get("_type", "").split(",") if t] or None
    after = _everything_cursor(params.get("_cursor"))
    with unit_of_work(_engine(request), write=False) as conn:
        svc = _svc(request, conn, access)
        # one more than the page: whether a next page exists
        versions, total = svc.everything(rid, types=types, since=since, count=count + 1,
                                         offset=offset, after=after)
        links = [("self", str(request.url))]
        if len(versions) > count:  # the next page begins after this page's last resource
            versions = versions[:count]
            last = versions[-1]
            keep = [(k, v) for k, v in request.query_params.multi_items()
                    if k not in ("_cursor", "_offset")]
            links.append(("next", f"{_base(request)}/Patient/{rid}/$everything?" + urlencode(
                [*keep, ("_cursor", f"{last.resource_type}/{last.id}")])))
        return _fhir(bundles.everything_bundle(svc, versions, total, links))


def _everything_cursor(raw: str | None) -> tuple[str, str] | None:
    """``_cursor=Type/id``: the resource the page follows (keyset paging)."""
    if raw is None:
        return None
    rtype, _, rid = raw.partition("/")
    if not is_resource_type(rtype) or not ID_RE.fullmatch(rid):
        raise BadRequest("_cursor must be Type/id, as in the next link", expression=["_cursor"])
    return rtype, rid


@router.post("/{rtype}/{rid}/$validate")
async def validate_instance(
    rtype: str, rid: str, request: Request, access: AccessContext = ACCESS
) -> Response:
    body = await _json_body(request)
    from usmis.fhir.operations.validate import validate_operation

    return _fhir(validate_operation(rtype, body, rid))


@router.get("/{rtype}/{rid}")
def read(rtype: str, rid: str, request: Request, access: AccessContext = ACCESS) -> Response:
    with unit_of_work(_engine(request), write=False) as conn:
        return _read_response(_svc(request, conn, access).read_raw(rtype, rid))


@router.put("/{rtype}/{rid}")
async def update(rtype: str, rid: str, request: Request, access: AccessContext = ACCESS
                 ) -> Response:
    body = await _json_body(request)
    if_match = request.headers.get("if-match")

    def work() -> Response:
        with unit_of_work(_engine(request), write=True) as conn:
            result = _svc(request, conn, access).update(rtype, rid, body, if_match=if_match)
        return _write_response(request, result, _base(request))

    return await run_in_threadpool(work)


@router.patch("/{rtype}/{rid}")
async def patch(rtype: str, rid: str, request: Request, access: AccessContext = ACCESS
                ) -> Response:
    ctype = request.headers.get("content-type", "")
    if "json-patch+json" not in ctype:
        raise UnsupportedMediaType("PATCH takes a JSON Patch (application/json-patch+json)")
    body = await _json_body(request)
    if_match = request.headers.get("if-match")

    def work() -> Response:
        with unit_of_work(_engine(request), write=True) as conn:
            result = _svc(request, conn, access).patch(rtype, rid, body, if_match=if_match)
        return _write_response(request, result, _base(request))

    return await run_in_threadpool(work)


@router.delete("/{rtype}/{rid}")
def delete(rtype: str, rid: str, request: Request, access: AccessContext = ACCESS) -> Response:
    with unit_of_work(_engine(request), write=True) as conn:
        result = _svc(request, conn, access).delete(
            rtype, rid, if_match=request.headers.get("if-match"))
    headers = {"ETag": result.etag} if result is not None else {}
    return Response(status_code=204, headers=headers)


__all__ = ["router"]
