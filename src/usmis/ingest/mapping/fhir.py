"""FHIR R4 payloads from sources (REST posts, bundle files) → the transaction to store.

What a source sends is recorded as its own: ``meta.source`` is overwritten with the
source's URI, and a source may not write into another source's identifier namespace.
Creates of resources that carry the source's own identifier become conditional PUTs on it,
so sending the same record twice updates rather than duplicates.
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
    iin_status,
    source_uri,
)

_FOREIGN = f"{SID}/source/"


def split_batch(raw: bytes) -> list[bytes] | None:
    """A ``batch`` Bundle → one single-entry transaction per entry (each its own message,
    so one bad entry never rejects the others); None for anything else."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(doc, dict) and doc.get("resourceType") == "Bundle"
            and doc.get("type") in {"batch", "collection"} and isinstance(doc.get("entry"),
                                                                           list)):
        return None
    out = []
    for entry in doc["entry"]:
        one: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        if doc.get("timestamp"):
            one["timestamp"] = doc["timestamp"]
        out.append(orjson.dumps(one))
    return out


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
        new = {"resource": res, "request": req}
        if entry.get("fullUrl"):
            new["fullUrl"] = entry["fullUrl"]
        out_entries.append(new)
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
