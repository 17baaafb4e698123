"""Structural validation against FHIR R4 (4.0.1), with element paths in every error.

Why this design: ``fhir.resources`` 8.x ships R4B and R5 only, so it would validate the
wrong version.  ``fhirclient`` (already a dependency) carries generated R4 4.0.1 models;
its own constructor is fast (~60 µs an Observation) but misses things we must reject:
it type-checks only the first item of a list, accepts two choices of one ``value[x]``,
and reports errors in prose with Python attribute names.  So we use its generated
*metadata* (``elementProperties()``: JSON name, type, list, choice group, required) and
walk the JSON ourselves: every item is checked, choice groups are exclusive, primitive
formats (date, dateTime, instant, time, id) follow the R4 regexes, empty strings, arrays
and objects are refused (R4 json.html), and each problem names its FHIRPath, e.g.
``Observation.code.coding[1].system``.  Messages name the element, never its value.

Not checked (documented limits): terminology bindings, invariants (FHIRPath constraints),
profiles, cardinality maxima other than list/non-list, reference target types.
"""

from __future__ import annotations

import calendar
import importlib
import pkgutil
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import fhirclient.models as fhir_models
from fhirclient.models.fhirabstractbase import FHIRAbstractBase
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.fhirdatetime import FHIRDateTime
from fhirclient.models.fhirinstant import FHIRInstant
from fhirclient.models.fhirtime import FHIRTime
from fhirclient.models.resource import Resource

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TZ = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
DATE_RE = re.compile(rf"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?")
DATETIME_RE = re.compile(
    rf"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{_TIME}{_TZ})?)?)?"
)
INSTANT_RE = re.compile(rf"{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{_TIME}{_TZ}")
TIME_RE = re.compile(_TIME)
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# R4 datatypes.html#string: no code points below 32 except tab, CR, LF.  NUL also cannot
# be stored in PostgreSQL text (index values), so it is refused here, as input.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

_PRIMITIVE_RE: dict[type, tuple[re.Pattern[str], str]] = {
    FHIRDate: (DATE_RE, "date"),
    FHIRDateTime: (DATETIME_RE, "dateTime"),
    FHIRInstant: (INSTANT_RE, "instant"),
    FHIRTime: (TIME_RE, "time"),
}


def _real_day(value: str) -> bool:
    """A full date's day exists in its month (the pattern allows 2024-02-31)."""
    if len(value) < 10 or value[4] != "-" or value[7] != "-" or int(value[8:10]) <= 28:
        return True
    return int(value[8:10]) <= calendar.monthrange(int(value[:4]), int(value[5:7]))[1]


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation problem: FHIRPath ``expression`` and a value-free ``message``."""

    expression: str
    message: str
    code: str = "structure"  # FHIR IssueType: structure | required | value | invalid


# What an element's type asks of its JSON value, decided once per element (not per value).
_STR, _BOOL, _INT, _FLOAT, _PRIMITIVE, _RESOURCE, _OBJECT, _OTHER = range(8)


def _kind_of(typ: type) -> int:
    if typ is str:
        return _STR
    if typ is bool:
        return _BOOL
    if typ is int:
        return _INT
    if typ is float:
        return _FLOAT
    if typ in _PRIMITIVE_RE:
        return _PRIMITIVE
    if isinstance(typ, type) and issubclass(typ, FHIRAbstractBase):
        return _RESOURCE if typ is Resource or typ.__name__ == "Resource" else _OBJECT
    return _OTHER


@dataclass(frozen=True, slots=True)
class _Prop:
    typ: type
    is_list: bool
    choice: str | None
    required: bool
    kind: int


@cache
def resource_classes() -> dict[str, type[FHIRAbstractBase]]:
    """Every R4 resource type fhirclient knows, by name (146 in 4.0.1)."""
    out: dict[str, type[FHIRAbstractBase]] = {}
    for mod in pkgutil.iter_modules(fhir_models.__path__):
        if mod.name.endswith("_tests") or mod.name.startswith("fhir"):
            continue
        module = importlib.import_module(f"fhirclient.models.{mod.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Resource)
                and obj.__module__ == module.__name__
                and getattr(obj, "resource_type", None) == obj.__name__
            ):
                out[obj.__name__] = obj
    for abstract in ("Resource", "DomainResource"):
        out.pop(abstract, None)
    return out


def is_resource_type(name: str) -> bool:
    return name in resource_classes()


@cache
def _props(cls: type[FHIRAbstractBase]) -> tuple[dict[str, _Prop], frozenset[str]]:
    inst = cls()
    props: dict[str, _Prop] = {}
    required_groups: set[str] = set()
    for _name, jsname, typ, is_list, of_many, not_optional in inst.elementProperties():
        props[jsname] = _Prop(typ, bool(is_list), of_many, bool(not_optional), _kind_of(typ))
        if not_optional:
            required_groups.add(of_many or jsname)
    return props, frozenset(required_groups)


def validate_resource(resource: Any, expected_type: str | None = None) -> list[Issue]:
    """All structural problems of a resource (empty list: valid R4 structure)."""
    if not isinstance(resource, dict):
        return [Issue("", "a resource must be a JSON object")]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return [Issue("resourceType", "resourceType is missing", "required")]
    cls = resource_classes().get(rtype)
    if cls is None:
        return [Issue("resourceType", "unknown resource type for FHIR R4", "not-supported")]
    if expected_type is not None and rtype != expected_type:
        return [Issue("resourceType", f"resourceType must be {expected_type}", "invalid")]
    issues: list[Issue] = []
    rid = resource.get("id")
    if rid is not None and not (isinstance(rid, str) and ID_RE.fullmatch(rid)):
        issues.append(Issue(f"{rtype}.id", "id is not a valid FHIR id", "value"))
    _check_object(cls, resource, rtype, issues, top=True)
    return issues


# An element's path, rendered only for an issue: (parent, key) or (parent, key, index) —
# formatting every element's path up front was a tenth of validating a valid resource.
Path = str | tuple[Any, ...]


def _render(path: Path) -> str:
    if isinstance(path, str):
        return path
    text = f"{_render(path[0])}.{path[1]}"
    return f"{text}[{path[2]}]" if len(path) > 2 else text


def _add(out: list[Issue], path: Path, message: str, code: str) -> None:
    out.append(Issue(_render(path), message, code))


def _check_object(
    cls: type[FHIRAbstractBase], data: dict[str, Any], path: Path, out: list[Issue], top: bool
) -> None:
    props, required = _props(cls)  # type: ignore[arg-type]
    if not data:
        _add(out, path, "an element must not be empty (R4 json.html)", "invalid")
    choices: set[str] = set()
    present: set[str] = set()
    for key, value in data.items():
        if key == "resourceType":
            if not top:
                _add(out, (path, "resourceType"), "unexpected resourceType", "structure")
            continue
        if key.startswith("_") and key[1:] in props:
            _check_primitive_extension(value, (path, key[1:]), out)
            present.add(key[1:])
            continue
        prop = props.get(key)
        if prop is None:
            _add(out, (path, key), "unknown element", "structure")
            continue
        if prop.choice is not None:
            if prop.choice in choices:
                _add(out, (path, key), f"only one {prop.choice}[x] choice may be present",
                     "structure")
            choices.add(prop.choice)
        present.add(key)
        if value is None:
            _add(out, (path, key), "null is not allowed", "structure")
            continue
        if prop.is_list:
            if not isinstance(value, list):
                _add(out, (path, key), "must be an array", "structure")
                continue
            if not value:
                _add(out, (path, key), "an array must not be empty", "invalid")
            for i, item in enumerate(value):
                _check_value(prop, item, (path, key, i), out)
        else:
            if isinstance(value, list):
                _add(out, (path, key), "must not be an array", "structure")
                continue
            _check_value(prop, value, (path, key), out)
    for group in required:
        if group not in present and group not in choices:
            name = f"{group}[x]" if any(p.choice == group for p in props.values()) else group
            _add(out, (path, name), "required element is missing", "required")


def _check_primitive_extension(value: Any, path: Path, out: list[Issue]) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is not None and not isinstance(item, dict):
            _add(out, path, "primitive extension must be an object", "structure")
            return


def _check_value(prop: _Prop, value: Any, path: Path, out: list[Issue]) -> None:
    kind = prop.kind
    if kind == _STR:
        if not isinstance(value, str):
            _add(out, path, "must be a string", "structure")
        elif not value.strip():
            _add(out, path, "must not be empty or blank", "value")
        elif CONTROL_RE.search(value):
            _add(out, path, "must not contain control characters", "value")
    elif kind == _OBJECT:
        if not isinstance(value, dict):
            _add(out, path, "must be an object", "structure")
            return
        _check_object(prop.typ, value, path, out, top=False)
    elif kind == _PRIMITIVE:
        rx, label = _PRIMITIVE_RE[prop.typ]
        if not isinstance(value, str) or not rx.fullmatch(value) or not _real_day(value):
            _add(out, path, f"is not a valid {label}", "value")
    elif kind == _BOOL:
        if not isinstance(value, bool):
            _add(out, path, "must be a boolean", "structure")
    elif kind == _INT:
        if not isinstance(value, int) or isinstance(value, bool):
            _add(out, path, "must be an integer", "structure")
    elif kind == _FLOAT:
        if not isinstance(value, int | float) or isinstance(value, bool):
            _add(out, path, "must be a number", "structure")
    elif kind == _RESOURCE:
        if not isinstance(value, dict):
            _add(out, path, "must be an object", "structure")
            return
        # contained / Bundle.entry.resource: dispatch on the inner resourceType
        inner = value.get("resourceType")
        cls = resource_classes().get(inner) if isinstance(inner, str) else None
        if cls is None:
            _add(out, path, "unknown or missing resourceType", "structure")
            return
        _check_object(cls, value, path, out, top=True)
    else:  # pragma: no cover - fhirclient uses only the types above
        _add(out, path, "unsupported element type", "not-supported")
