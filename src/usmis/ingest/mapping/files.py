"""The declarative file-mapping engine: one TOML file per source turns its rows into FHIR.

A mapping file (``mapping/sources/<source id>.toml``, or any path given to
``usmis sources add --mapping``) says how to read the file and what each row makes::

    [read]
    format = "csv"            # csv | tsv | ndjson | json
    encoding = "cp1251"
    delimiter = ";"
    decimal = ","             # decimal separator of numbers
    date_formats = ["%d.%m.%Y"]
    datetime_formats = ["%d.%m.%Y %H:%M"]

    [row]
    id = "$ID_ОТПУСКА|required"      # the row's record id (message id, dead-letter key)
    event_time = "$ДАТА_ОТПУСКА|date" # the source timestamp: later wins
    iin = "ИИН"                       # column whose IIN share the quality report counts
    personal = ["ФИО", "ИИН"]         # values never shown in reject reasons

    [maps.sex]                        # code maps: source code → FHIR code
    "м" = "male"

    [[resource]]                      # which rows make which resources
    name = "patient"                  # referenced from other resources as "@patient"
    type = "Patient"
    kind = "patient"                  # identifier system .../source/{source}/patient
    key = "$КАРТА_ПАЦИЕНТА"           # no key → no resource (unless required = true)
    when = "$СТАТУС|eq:dispensed"     # optional condition
    [resource.body]                   # the FHIR resource, dotted keys welcome
    gender = "$ПОЛ|map:sex"

Values: a string that is exactly ``$COLUMN|transform|…`` yields the transformed value
(typed: numbers stay numbers); ``{$COLUMN|…}`` and ``{source}`` interpolate inside text;
``@name`` is a reference to another resource of the same row.  Empty values drop their
key, and empty objects/lists are pruned, so optional columns need no special syntax.

Transforms: required, date, datetime, number, int, bool, upper, lower, strip, trim,
map:<name>, word:<n> (n-th word, 0-based), words:<n> (words from n on), default:<text>,
eq:<text>, ne:<text>, nonempty, choose:<a>:<b> (a if there is a value, else b),
month (YYYY-MM → first day), prefix:<text>, lstrip0.
``mode = "create"`` on a resource makes it a conditional create (``ifNoneExist``): for
records a row only mentions (the patient of a claim), so each row does not rewrite them.
``put_by = "id"`` writes ``PUT Type/<uuid5(identifier)>`` for types the store cannot search by
identifier (tariffs, formulary, payments); ``identifier = false`` for types without one.
A failing transform rejects the row with rule, column and reason.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from usmis.ingest.mapping.common import (
    LOCAL_TZ,
    Mapped,
    Reject,
    full_url,
    iin_status,
    put_entry,
    source_system,
    source_uri,
    transaction,
)

SOURCES_DIR = Path(__file__).resolve().parent / "sources"
_EXPR = re.compile(r"\{(\$[^{}]+|source)\}")


@dataclass
class ResourceRule:
    name: str
    type: str
    kind: str
    key: str
    body: dict[str, Any]
    when: str | None = None
    required: bool = False
    mode: str = "put"  # put: the row is the record's state; create: only ensure it exists
    # identifier: conditional PUT on the source's identifier (searchable types);
    # id: PUT Type/<uuid5 of the identifier> for types the store cannot search by identifier
    # (reference data such as tariffs and formularies; the id is opaque and not personal)
    put_by: str = "identifier"
    identifier: bool = True  # False for types without an identifier element

    def __post_init__(self) -> None:
        self.key_tpl = compile_template(self.key)
        self.when_tpl = None if self.when is None else compile_template(self.when)
        self.body_tpl = compile_template(self.body)


@dataclass
class FileMapping:
    source_id: str
    format: str
    encoding: str = "utf-8"
    delimiter: str = ","
    decimal: str = "."
    date_formats: list[str] = field(default_factory=lambda: ["%Y-%m-%d"])
    datetime_formats: list[str] = field(default_factory=lambda: ["%Y-%m-%dT%H:%M:%S"])
    row_id: str = ""
    event_time: str | None = None
    iin_column: str | None = None
    personal: frozenset[str] = frozenset()
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    resources: list[ResourceRule] = field(default_factory=list)
    header_required: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.row_id_tpl = compile_template(self.row_id) if self.row_id else None
        self.event_time_tpl = compile_template(self.event_time) if self.event_time else None
        self.date_first = (*self.date_formats, *self.datetime_formats)
        self.datetime_first = (*self.datetime_formats, *self.date_formats)


def mapping_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in {".toml", ".json"} and p.exists():
        return p
    return SOURCES_DIR / f"{name}.toml"


_cache: dict[tuple[str, str], FileMapping] = {}


def load_mapping(name: str, source_id: str | None = None) -> FileMapping:
    """Load (and cache) a mapping by source id or path."""
    path = mapping_path(name)
    ck = (str(path), source_id or "")
    if ck in _cache:
        return _cache[ck]
    if not path.exists():
        raise FileNotFoundError(f"no mapping file for {name!r}")
    doc = (orjson.loads(path.read_bytes()) if path.suffix == ".json"
           else tomllib.loads(path.read_text(encoding="utf-8")))
    m = parse_mapping(doc, source_id or path.stem)
    _cache[ck] = m
    return m


def parse_mapping(doc: dict[str, Any], source_id: str) -> FileMapping:
    read = doc.get("read", {})
    row = doc.get("row", {})
    fmt = read.get("format", "csv")
    m = FileMapping(
        source_id=doc.get("source", source_id),
        format=fmt,
        encoding=read.get("encoding", "utf-8"),
        delimiter=read.get("delimiter", "\t" if fmt == "tsv" else ","),
        decimal=read.get("decimal", "."),
        date_formats=list(read.get("date_formats", ["%Y-%m-%d"])),
        datetime_formats=list(read.get("datetime_formats", ["%Y-%m-%dT%H:%M:%S"])),
        row_id=row.get("id", ""),
        event_time=row.get("event_time"),
        iin_column=row.get("iin"),
        personal=frozenset(row.get("personal", [])),
        maps={k: {str(a): str(b) for a, b in v.items()} for k, v in doc.get("maps", {}).items()},
        header_required=list(read.get("columns", [])),
    )
    for i, r in enumerate(doc.get("resource", [])):
        m.resources.append(ResourceRule(
            name=r.get("name", f"r{i}"), type=r["type"], kind=r.get("kind", r["type"].lower()),
            key=r["key"], body=r.get("body", {}), when=r.get("when"),
            required=bool(r.get("required", False)), mode=r.get("mode", "put"),
            put_by=r.get("put_by", "identifier"), identifier=bool(r.get("identifier", True)),
        ))
    return m


# --- splitting a file into rows ------------------------------------------------------------


# A quoted field that runs on over more physical lines than this is taken as a broken
# record (a quote never closed), not as one field holding the rest of the file.
MAX_FIELD_LINES = 50


def _ends_inside(line: bytes, delim: int, inside: bool) -> bool:
    """Whether a CSV record is inside a quoted field at the end of ``line``, given whether
    it was at its start.  A quote opens a quoted field only at the start of a field (a
    quote within an unquoted value is a character); ``""`` in a quoted field is a quote."""
    field_start, i, n = True, 0, len(line)
    while i < n:
        c = line[i]
        if inside:
            if c == 0x22:
                if i + 1 < n and line[i + 1] == 0x22:
                    i += 2
                    continue
                inside = False
                field_start = False
        elif c == 0x22 and field_start:
            inside = True
        else:
            field_start = c == delim
        i += 1
    return inside


def split_file(data: bytes, m: FileMapping) -> tuple[list[str] | None, list[tuple[int, bytes]]]:
    """(header, [(line number, raw row)]).  Rows stay bytes so a badly encoded row fails
    alone; line numbers are 1-based physical lines (the header is line 1).  A quoted CSV
    field may span lines; one whose quote is never closed (within MAX_FIELD_LINES) leaves
    its first line alone as the record — a dead letter — and the lines after it are rows
    of their own: one bad row never takes the rest of its file with it."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if m.format == "json" and data.lstrip()[:1] == b"[":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, list):
            return None, [(i + 1, orjson.dumps(x)) for i, x in enumerate(doc)]
    lines = data.split(b"\n")
    quoted = m.format in {"csv", "tsv"}
    d = m.delimiter.encode(m.encoding, errors="replace")  # the byte, as the file has it
    delim = d[0] if len(d) == 1 else -1
    rows: list[tuple[int, bytes]] = []
    n = 0
    while n < len(lines):
        start, line = n, lines[n].rstrip(b"\r")
        n += 1
        # (an even number of quotes closes what it opens in well-formed CSV: read fast)
        if quoted and line.count(b'"') % 2 and _ends_inside(line, delim, False):
            parts, inside, k = [line], True, n
            while inside and k < len(lines) and k - start < MAX_FIELD_LINES:
                more = lines[k].rstrip(b"\r")
                parts.append(more)
                inside = _ends_inside(more, delim, True) if b'"' in more else True
                k += 1
            if not inside:  # else: never closed, the first line alone
                line, n = b"\n".join(parts), k
        if line.strip():
            rows.append((start + 1, line))
    if m.format in {"ndjson", "json"}:
        return None, rows
    if not rows:
        return [], []
    header_text = rows[0][1].decode(m.encoding, errors="replace")
    header = next(csv.reader([header_text], delimiter=m.delimiter))
    return [h.strip() for h in header], rows[1:]


# --- mapping one row -----------------------------------------------------------------------


class _Row:
    def __init__(self, values: dict[str, Any], m: FileMapping, source_id: str) -> None:
        self.values = values
        self.m = m
        self.source_id = source_id
        self.refs: dict[str, str] = {}

    def col(self, name: str) -> Any:
        if name not in self.values:
            raise Reject("missing-column", name, "column not present in the record")
        v = self.values[name]
        return v.strip() if isinstance(v, str) else v

    def shown(self, column: str, value: Any) -> str:
        if column in self.m.personal:
            return ""
        return f" '{str(value)[:40]}'"

    def expr(self, e: _Expr) -> Any:
        """Evaluate a parsed ``$COLUMN|t1|t2``."""
        column, transforms = e
        value: Any = self.col(column)
        for name, arg in transforms:
            value = self.transform(name, arg, column, value)
        return value

    def transform(self, name: str, arg: str, column: str, v: Any) -> Any:  # noqa: C901 - flat
        empty = v is None or v == ""
        if name == "required":
            if empty:
                raise Reject("required", column, "value is empty")
            return v
        if name == "default":
            return arg if empty else v
        if name == "nonempty":
            return not empty
        if name == "choose":  # choose:A:B → A when there is a value, else B
            a, _, b = arg.partition(":")
            return b if empty else a
        if name == "eq":
            return str(v) == arg
        if name == "ne":
            return str(v) != arg
        if empty:
            return None
        s = str(v)
        if name == "date":
            return self._date(s, column, self.m.date_first)[:10]
        if name == "datetime":
            return self._date(s, column, self.m.datetime_first)
        if name in {"number", "int"}:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                num: float = v
            else:
                text = s.replace(" ", "").replace("\u00a0", "")
                if self.m.decimal != ".":
                    text = text.replace(self.m.decimal, ".")
                try:
                    num = float(text)
                except ValueError:
                    raise Reject("number-format", column,
                                 f"not a number{self.shown(column, v)}") from None
            if name == "int":
                if num != int(num):
                    raise Reject("number-format", column,
                                 f"not a whole number{self.shown(column, v)}")
                return int(num)
            return int(num) if num == int(num) and "." not in s and self.m.decimal not in s \
                else num
        if name == "bool":
            return s.lower() in {"1", "true", "yes", "y", "да"}
        if name == "upper":
            return s.upper()
        if name == "lower":
            return s.lower()
        if name in {"strip", "trim"}:
            return s.strip()
        if name == "lstrip0":
            return s.lstrip("0") or "0"
        if name == "prefix":
            return arg + s
        if name == "map":
            table = self.m.maps.get(arg)
            if table is None:
                raise KeyError(f"mapping has no code map {arg!r}")
            if s in table:
                return table[s] or None
            if s.lower() in table:
                return table[s.lower()] or None
            if "*" in table:
                return table["*"] or None
            raise Reject("code", column, f"code{self.shown(column, v)} not in map {arg}")
        if name == "word":
            words = s.split()
            n = int(arg or 0)
            return words[n] if n < len(words) else None
        if name == "words":
            words = s.split()
            return " ".join(words[int(arg or 0):]) or None
        if name == "month":
            if not re.fullmatch(r"\d{4}-\d{2}", s):
                raise Reject("date-format", column, f"not YYYY-MM{self.shown(column, v)}")
            return f"{s}-01"
        raise KeyError(f"unknown transform {name!r}")

    def _date(self, s: str, column: str, formats: tuple[str, ...]) -> str:
        parsed = _parse_date(s, formats)
        if parsed is None:
            raise Reject("date-format", column,
                         f"not a date in {formats[0]}{self.shown(column, s)}")
        if not 1850 <= parsed[1] <= 2100:
            raise Reject("date-range", column, f"year out of range{self.shown(column, s)}")
        return parsed[0]

    def render(self, tpl: Template) -> Any:
        return tpl(self)[0]


# --- templates, compiled once per mapping ----------------------------------------------------
#
# A template renders a row to (value, dynamic): an object whose dynamic parts all came out
# empty is dropped, so ``{system = "…iin", value = "$ИИН"}`` disappears when the IIN column
# is empty.  Parsing the ``$…``/``@…``/``{…}`` syntax once per mapping instead of once per
# row halves the time a row takes to map (a nation's extracts are most of its records).

_Expr = tuple[str, list[tuple[str, str]]]  # (column, [(transform, argument)])
Template = Callable[[_Row], tuple[Any, bool]]
_EMPTY: tuple[Any, ...] = (None, "", [], {})


def _parse_expr(text: str) -> _Expr:
    column, *transforms = text[1:].split("|")
    return column, [(t.partition(":")[0], t.partition(":")[2]) for t in transforms]


def _is_static(node: Any) -> bool:
    if isinstance(node, dict):
        return all(_is_static(v) for v in node.values())
    if isinstance(node, list):
        return all(_is_static(v) for v in node)
    return not (isinstance(node, str) and (
        node.startswith(("$", "@")) or "{$" in node or "{source}" in node))


def compile_template(node: Any) -> Template:
    """The mapping's template ``node`` as a function of a row (see :class:`_Row`)."""
    if _is_static(node):
        if isinstance(node, (dict, list)):
            value, _ = compile_dynamic(node)(_Row({}, FileMapping("", "csv"), ""))
            if value is None:
                return lambda row: (None, False)
            blob = orjson.dumps(value)  # a fresh copy per row: callers may change it
            return lambda row: (orjson.loads(blob), False)
        return lambda row: (node, False)
    return compile_dynamic(node)


def compile_dynamic(node: Any) -> Template:  # noqa: C901 - one case per template syntax
    if isinstance(node, dict):
        items = [(k, compile_template(v)) for k, v in node.items()]

        def render_object(row: _Row) -> tuple[Any, bool]:
            out: dict[str, Any] = {}
            dynamic = kept_dynamic = False
            for k, f in items:
                val, dyn = f(row)
                dynamic |= dyn
                if val not in _EMPTY:
                    out[k] = val
                    kept_dynamic |= dyn
            if not out or (dynamic and not kept_dynamic):
                return None, dynamic
            return out, dynamic
        return render_object
    if isinstance(node, list):
        fs = [compile_template(v) for v in node]

        def render_list(row: _Row) -> tuple[Any, bool]:
            items = [f(row) for f in fs]
            kept = [v for v, _ in items if v not in _EMPTY]
            return (kept or None), any(d for _, d in items)
        return render_list
    if isinstance(node, str) and node.startswith("$"):
        e = _parse_expr(node)
        return lambda row: (row.expr(e), True)
    if isinstance(node, str) and node.startswith("@"):
        name = node[1:]

        def reference(row: _Row) -> tuple[Any, bool]:
            ref = row.refs.get(name)
            return ({"reference": ref} if ref else None), True
        return reference
    if isinstance(node, str) and ("{$" in node or "{source}" in node):
        # literal text, "{source}" and "{$…}" in turn (re.split keeps the groups)
        parts: list[tuple[str, Any]] = [
            ("text", p) if i % 2 == 0 else ("source", p) if p == "source"
            else ("expr", _parse_expr(p))
            for i, p in enumerate(_EXPR.split(node))]
        dynamic = "{$" in node

        def interpolate(row: _Row) -> tuple[Any, bool]:
            out: list[str] = []
            missing = False
            for kind, p in parts:
                if kind == "text":
                    out.append(p)
                elif kind == "source":
                    out.append(row.source_id)
                else:
                    val = row.expr(p)
                    missing |= val in (None, "")
                    out.append("" if val is None else str(val))
            return (None if missing else "".join(out)), dynamic
        return interpolate
    return lambda row: (node, False)


@lru_cache(maxsize=65536)
def _parse_date(s: str, formats: tuple[str, ...]) -> tuple[str, int] | None:
    """(ISO text, year) of ``s`` in the first format that reads it; an extract's dates
    repeat (days of service, birth dates), and ``strptime`` is slow."""
    for f in formats:
        try:
            dt = datetime.strptime(s, f)
        except ValueError:
            continue
        text = dt.replace(tzinfo=LOCAL_TZ).isoformat() if "%H" in f else dt.date().isoformat()
        return text, dt.year
    return None


def decode_row(raw: bytes, header: list[str] | None, m: FileMapping) -> dict[str, Any]:
    try:
        text = raw.decode(m.encoding)
    except UnicodeDecodeError:
        raise Reject("encoding", "row", f"bytes are not valid {m.encoding}") from None
    if m.format in {"ndjson", "json"}:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Reject("json", "row", "not a valid JSON record") from None
        if not isinstance(doc, dict):
            raise Reject("json", "row", "record is not a JSON object")
        return doc
    cells = next(csv.reader(io.StringIO(text), delimiter=m.delimiter), [])
    header = header or []
    if len(cells) != len(header):
        raise Reject("column-count", "row",
                     f"{len(cells)} fields where the header has {len(header)}")
    return dict(zip(header, cells, strict=True))


def map_row(raw: bytes, header: list[str] | None, m: FileMapping, source_id: str) -> Mapped:
    """One raw row → a transaction Bundle of conditional PUTs (or :class:`Reject`)."""
    values = decode_row(raw, header, m)
    row = _Row(values, m, source_id)
    message_id = str(row.render(m.row_id_tpl) or "") if m.row_id_tpl else ""
    event = None
    if m.event_time_tpl:
        ev = row.render(m.event_time_tpl)
        if ev:
            event = datetime.fromisoformat(ev)
            if event.tzinfo is None:
                event = event.replace(tzinfo=LOCAL_TZ)
    keys: dict[str, tuple[str, str]] = {}
    for r in m.resources:
        if r.when_tpl is not None and not row.render(r.when_tpl):
            continue
        key = row.render(r.key_tpl)
        if key in (None, ""):
            if r.required:
                raise Reject("required", r.key.lstrip("$").split("|")[0], "record id is empty")
            continue
        system = source_system(source_id, r.kind)
        keys[r.name] = (system, str(key))
        row.refs[r.name] = full_url(system, str(key))
    entries = []
    for r in m.resources:
        if r.name not in keys:
            continue
        system, key = keys[r.name]
        body: dict[str, Any] = row.render(r.body_tpl) or {}
        ident = {"system": system, "value": key}
        resource: dict[str, Any] = {"resourceType": r.type}
        if r.identifier:
            resource["identifier"] = [ident] + [
                i for i in body.pop("identifier", []) if i != ident]
        resource.update(body)
        resource["meta"] = {"source": source_uri(source_id)}
        if r.put_by == "id":
            rid = full_url(system, key).removeprefix("urn:uuid:")
            resource = {"resourceType": r.type, "id": rid,
                        **{k: v for k, v in resource.items() if k != "resourceType"}}
            entry: dict[str, Any] = {"fullUrl": full_url(system, key), "resource": resource,
                     "request": {"method": "PUT", "url": f"{r.type}/{rid}"}}
        else:
            entry = put_entry(resource, system, key)
        if r.mode == "create":
            rtype, _, query = entry["request"]["url"].partition("?")
            entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": query}
        entries.append(entry)
    if not entries:
        raise Reject("empty", "row", "the row makes no resource")
    iin = None
    if m.iin_column:
        v = values.get(m.iin_column)
        iin = iin_status(str(v).strip() if v not in (None, "") else None)
    return Mapped(bundle=transaction(entries), event_time=event, message_id=message_id,
                  iin_status=iin)
