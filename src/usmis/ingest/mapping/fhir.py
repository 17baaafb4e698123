"""FHIR R4 payloads from sources (REST posts, bundle files) → the transaction to store.

What a source sends is recorded as its own: ``meta.source`` is overwritten with the
source's URI, and a source may not write into another source's identifier namespace.
Creates of resources that carry the source's own identifier become conditional PUTs on it,
so sending the same record twice updates rather than duplicates.

A ``batch`` Bundle is stored like a transaction — whole or not at all, as one inbox message
— because its entries refer to each other by logical identifier (``subject.identifier``);
those references are resolved to the entry that carries the identifier, so the Encounter
lands in its Patient's compartment.  A rejection names the failing entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from usmis.ingest.mapping.common import (
    IIN_SYSTEM,
    SID,
    Mapped,
    Reject,
    full_url,
    iin_status,
    source_uri,
)

_FOREIGN = f"{SID}/source/"


def map_payload(raw: bytes, source_id: str) -> Mapped:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Reject("json", "body", "not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise Reject("structure", "resourceType", "not a FHIR resource")
    if doc["resourceType"] == "Bundle":
        btype = doc.get("type")
        if btype not in {"transaction", "batch", "collection"}:
            raise Reject("bundle-type", "Bundle.type",
                         f"bundle type '{str(btype)[:20]}' cannot be ingested")
        entries = doc.get("entry")
        if not isinstance(entries, list) or not entries:
            raise Reject("required", "Bundle.entry", "bundle has no entries")
        timestamp = doc.get("timestamp")
        message_id = str(doc.get("id") or (doc.get("identifier") or {}).get("value") or "")
    else:
        entries = [{"resource": doc}]
        timestamp = (doc.get("meta") or {}).get("lastUpdated")
        message_id = str(doc.get("id") or "")
    out_entries = []
    status: str | None = None
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            raise Reject("structure", f"{where}.resource", "entry without a resource")
        res = entry["resource"]
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            raise Reject("structure", f"{where}.resource.resourceType", "missing resourceType")
        req = dict(entry.get("request") or {})
        own = _own_identifier(res, source_id, where)
        method = req.get("method") or ("PUT" if own else "POST")
        if method == "POST" and own and not req.get("ifNoneExist"):
            method = "PUT"
        if method == "PUT" and own and "?" not in str(req.get("url", "")) and not res.get("id"):
            req["url"] = f"{rtype}?identifier={quote(own[0], safe=':/')}|{quote(own[1], safe='')}"
        elif method == "PUT" and own and not req.get("url"):
            req["url"] = f"{rtype}?identifier={quote(own[0], safe=':/')}|{quote(own[1], safe='')}"
        req["method"] = method
        req.setdefault("url", rtype)
        if _FOREIGN in str(req.get("url", "")) and f"{_FOREIGN}{source_id}/" not in str(
                req["url"]).replace("%2F", "/"):
            raise Reject("foreign-identifier", f"{where}.request.url",
                         "a source may only use its own identifier systems")
        res = {**res, "meta": {**(res.get("meta") or {}), "source": source_uri(source_id)}}
        if rtype == "Patient":
            iins = [x.get("value") for x in res.get("identifier", []) if isinstance(x, dict)
                    and x.get("system") == IIN_SYSTEM]
            status = iin_status(iins[0] if iins else None)
        new: dict[str, Any] = {"resource": res, "request": req}
        if entry.get("fullUrl"):
            new["fullUrl"] = entry["fullUrl"]
        elif own:
            new["fullUrl"] = full_url(*own)
        out_entries.append(new)
    _link_logical_references(out_entries)
    event = _instant(timestamp)
    return Mapped(bundle={"resourceType": "Bundle", "type": "transaction", "entry": out_entries},
                  event_time=event, message_id=message_id, iin_status=status)


def _own_identifier(res: dict[str, Any], source_id: str, where: str) -> tuple[str, str] | None:
    own = f"{_FOREIGN}{source_id}/"
    for ident in res.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        system = str(ident.get("system", ""))
        if system.startswith(_FOREIGN) and not system.startswith(own):
            raise Reject("foreign-identifier", f"{where}.resource.identifier",
                         "a source may only use its own identifier systems")
        if system.startswith(own) and ident.get("value"):
            return system, str(ident["value"])
    return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else None


def _link_logical_references(entries: list[dict[str, Any]]) -> None:
    """``{"identifier": {system, value}}`` references to another entry of the same Bundle
    get that entry's fullUrl as ``reference`` (the identifier stays)."""
    index: dict[tuple[str, str], str] = {}
    for e in entries:
        if not e.get("fullUrl"):
            continue
        for ident in e["resource"].get("identifier") or []:
            if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
                index.setdefault((str(ident["system"]), str(ident["value"])), e["fullUrl"])
    if not index:
        return

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            ident = node.get("identifier")
            if not top and isinstance(ident, dict) and "reference" not in node:
                target = index.get((str(ident.get("system")), str(ident.get("value"))))
                if target:
                    node["reference"] = target
            for k, v in node.items():
                if k != "identifier":
                    walk(v, False)
        elif isinstance(node, list):
            for v in node:
                walk(v, False)

    for e in entries:
        walk(e["resource"], True)
