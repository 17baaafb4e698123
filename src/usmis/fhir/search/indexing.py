"""Values to index: a resource (FHIR JSON as a dict) to typed index rows.  Pure and fast.

This runs for every ingested resource, so it walks precompiled paths over the plain dict
(no model objects).  Blind parameters (see :mod:`.registry`) never emit plaintext: each
normalised value goes through the caller's keyed HMAC with a domain prefix:

    t:<token>   identifier value, normalised phone (digits) / e-mail (lower case)
    w:<word>    one folded word of a name or address part (default string search)
    x:<text>    a whole name/address part, exact (``:exact``)
    d:<date>    a birth/death date at year, month and day precision
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from usmis.fhir.search.normalize import (
    MAX_MS,
    MIN_MS,
    clip,
    date_prefixes,
    date_range,
    fold,
    telecom_value,
    words,
)
from usmis.fhir.search.registry import PathStep, SearchParam, stored_params

BlindIndex = Callable[[str], str]
Row = dict[str, Any]
Json = Any

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _walk(resource: Json, steps: tuple[PathStep, ...]) -> list[Json]:
    cur: list[Json] = [resource]
    for st in steps:
        nxt: list[Json] = []
        for node in cur:
            if not isinstance(node, dict):
                continue
            v = node.get(st.key)
            if v is None:
                continue
            items = v if isinstance(v, list) else [v]
            if st.where is not None:
                k, want = st.where
                items = [i for i in items if isinstance(i, dict) and i.get(k) == want]
            nxt.extend(items)
        if not nxt:
            return nxt
        cur = nxt
    return cur


def _string_parts(e: Json) -> list[str]:
    """The text parts a string parameter matches: a string, or a HumanName/Address's parts."""
    if isinstance(e, str):
        return [e]
    if not isinstance(e, dict):
        return []
    out: list[str] = []
    keys = _ADDRESS_PARTS if ("line" in e or "city" in e or "postalCode" in e) else _NAME_PARTS
    if "country" in e or "state" in e or "district" in e:
        keys = _ADDRESS_PARTS
    for k in keys:
        v = e.get(k)
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    return out


def _tokens(e: Json, telecom: bool) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display text) of a token-typed element."""
    if isinstance(e, str):
        return [(None, e, None)]
    if isinstance(e, bool):
        return [(None, "true" if e else "false", None)]
    if isinstance(e, int | float):
        return [(None, str(e), None)]
    if not isinstance(e, dict):
        return []
    coding = e.get("coding")
    if isinstance(coding, list):
        text = e.get("text") if isinstance(e.get("text"), str) else None
        out: list[tuple[str | None, str, str | None]] = []
        for c in coding:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                disp = c.get("display")
                out.append(
                    (c.get("system"), c["code"], text or (disp if isinstance(disp, str) else None))
                )
        return out
    value = e.get("value")
    if isinstance(value, str):  # Identifier, ContactPoint
        system = e.get("system")
        if telecom:
            return [(system, telecom_value(system, value), None)]
        return [(system if isinstance(system, str) else None, value.strip(), None)]
    code = e.get("code")
    if isinstance(code, str):  # Coding, Quantity-as-token
        disp = e.get("display")
        return [(e.get("system"), code, disp if isinstance(disp, str) else None)]
    return []


# Clinical dates repeat (a message's times, a day's events): parsed once.  Not used for
# blind-indexed dates (a birth date never reaches this cache).
_date_range = lru_cache(maxsize=8192)(date_range)


def _dates(e: Json) -> list[tuple[int, int]]:
    if isinstance(e, str):
        r = _date_range(e)
        return [r] if r else []
    if not isinstance(e, dict):
        return []
    if "start" in e or "end" in e:  # Period: an open end is open-ended
        s = _date_range(e["start"]) if isinstance(e.get("start"), str) else None
        t = _date_range(e["end"]) if isinstance(e.get("end"), str) else None
        if s is None and t is None:
            return []
        return [(s[0] if s else MIN_MS, t[1] if t else MAX_MS)]
    ev = e.get("event")  # Timing
    if isinstance(ev, list):
        return [r for x in ev if isinstance(x, str) and (r := _date_range(x))]
    return []


def _reference(e: Json, hmac: BlindIndex) -> Row | None:
    """target_type/target_id for local refs, url for others, blind identifier if given."""
    ref: str | None
    ident = None
    if isinstance(e, str):  # canonical / uri used as a reference
        ref = e
    elif isinstance(e, dict):
        r = e.get("reference")
        ref = r if isinstance(r, str) else None
        i = e.get("identifier")
        if isinstance(i, dict) and isinstance(i.get("value"), str):
            ident = i
    else:
        return None
    row: Row = {"target_type": None, "target_id": None, "url": None}
    if ref:
        if ref.startswith("#"):
            return None  # contained: not searchable across resources
        parsed = parse_reference(ref)
        if parsed:
            row["target_type"], row["target_id"] = parsed
        else:
            row["url"] = clip(ref)
    if ident is not None:
        row["id_system"] = ident.get("system")
        row["id_value"] = hmac("t:" + ident["value"].strip())
    elif not ref:
        return None
    return row


def parse_reference(ref: str) -> tuple[str, str] | None:
    """``Type/id`` or ``Type/id/_history/v`` → (Type, id); anything else → None."""
    parts = ref.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2 and parts[0][:1].isupper() and parts[0].isalpha() and parts[1]:
        return parts[0], parts[1]
    return None


def _quantities(e: Json, number: bool) -> list[Row]:
    if number:
        if isinstance(e, int | float) and not isinstance(e, bool):
            return [{"value": float(e), "system": None, "code": None, "unit": None}]
        return []
    if not isinstance(e, dict) or not isinstance(e.get("value"), int | float):
        return []
    if "currency" in e:  # Money
        return [{"value": float(e["value"]), "system": "urn:iso:std:iso:4217",
                 "code": e["currency"], "unit": None}]  # fmt: skip
    return [{"value": float(e["value"]), "system": e.get("system"), "code": e.get("code"),
             "unit": e.get("unit")}]  # fmt: skip


Extractor = Callable[[SearchParam, list[Json], BlindIndex], Iterable[Row]]


def _x_token(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    telecom = p.paths[0][-1].key == "telecom"
    seen: set[tuple[str | None, str]] = set()
    for e in els:
        for system, code, text in _tokens(e, telecom):
            if not code:
                continue
            if p.blind:
                code, text = hmac("t:" + code), None
            key = (system, code)
            if key in seen:
                continue
            seen.add(key)
            yield {
                "system": clip(system) if isinstance(system, str) else None,
                "code": clip(code),
                "text": blind_text(text, hmac) if text else None,
            }


# A token's display text may name a person (a CodeableConcept.text "pulse of <name>"): it is
# stored as the keyed HMACs of its first TEXT_WORDS words, 16 hex characters each, for
# ``:text`` to match whole words.
TEXT_WORDS = 15


def text_word_hashes(text: str, hmac: BlindIndex) -> list[str]:
    """The keyed HMACs of a text's distinct words, in order: what ``:text`` stores and
    what it looks for."""
    return [hmac("tw:" + w)[:16] for w in dict.fromkeys(words(text))]


def blind_text(text: str, hmac: BlindIndex) -> str | None:
    return " ".join(text_word_hashes(text, hmac)[:TEXT_WORDS]) or None


def _x_uri(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    for e in els:
        if isinstance(e, str) and e:
            yield {"system": None, "code": clip(e), "text": None}


def _x_string(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    seen: set[str] = set()
    for e in els:
        for part in _string_parts(e):
            part = part.strip()
            if not part:
                continue
            if p.blind:
                keys = ["x:" + part] + ["w:" + w for w in words(part)]
                for k in keys:
                    if k not in seen:
                        seen.add(k)
                        yield {"system": None, "code": hmac(k), "text": None}
            elif part not in seen:
                seen.add(part)
                yield {"norm": clip(fold(part)), "exact": clip(part)}


def _x_date(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    if p.blind:
        seen: set[str] = set()
        for e in els:
            for d in (date_prefixes(e) if isinstance(e, str) else None) or ():
                if d not in seen:
                    seen.add(d)
                    yield {"system": None, "code": hmac("d:" + d), "text": None}
        return
    for e in els:
        for lo, hi in _dates(e):
            yield {"low": lo, "high": hi}


def _x_reference(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    for e in els:
        row = _reference(e, hmac)
        if row is not None:
            row.setdefault("id_system", None)
            row.setdefault("id_value", None)
            yield row


def _x_quantity(p: SearchParam, els: list[Json], hmac: BlindIndex) -> Iterable[Row]:
    for e in els:
        yield from _quantities(e, p.type == "number")


_EXTRACTORS: dict[str, Extractor] = {
    "token": _x_token,
    "uri": _x_uri,
    "string": _x_string,
    "date": _x_date,
    "reference": _x_reference,
    "quantity": _x_quantity,
    "number": _x_quantity,
}


@dataclass(frozen=True)
class _Plan:
    params: list[tuple[SearchParam, Extractor]]
    # first JSON key -> (param position, path): only keys present in a resource are walked
    by_key: dict[str, list[tuple[int, tuple[PathStep, ...]]]]


@cache
def _plan(resource_type: str) -> _Plan:
    params = [(p, _EXTRACTORS[p.type]) for p in stored_params(resource_type)]
    by_key: dict[str, list[tuple[int, tuple[PathStep, ...]]]] = {}
    for pos, (p, _) in enumerate(params):
        for steps in p.paths:
            by_key.setdefault(steps[0].key, []).append((pos, steps))
    return _Plan(params, by_key)


def index_rows(resource_type: str, resource: Json, hmac: BlindIndex) -> dict[str, list[Row]]:
    """Index rows of one resource, by table name.  ``resource["id"]`` must be set.

    ``hmac`` is called once per blind value occurrence: name words recur across name,
    family and given, address parts across address and address-city — callers memoise it
    (see :func:`usmis.fhir.search.repository.write_index_many`)."""
    rid = resource.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError("resource has no id")
    plan = _plan(resource_type)
    found: dict[int, list[Json]] = {}
    for key in resource:
        for pos, steps in plan.by_key.get(key, ()):
            els = _walk(resource, steps)
            if els:
                found.setdefault(pos, []).extend(els)
    out: dict[str, list[Row]] = {}
    for pos in sorted(found):
        p, extract = plan.params[pos]
        rows = out.setdefault(p.table, [])
        for row in extract(p, found[pos], hmac):
            row["res_type"] = resource_type
            row["res_id"] = rid
            row["param"] = p.name
            rows.append(row)
    return {t: rows for t, rows in out.items() if rows}
