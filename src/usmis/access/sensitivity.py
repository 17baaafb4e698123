"""Which consent category a resource falls in: ``classify(resource) -> str | None``.

STORE calls :func:`classify` at write time and keeps the answer in the row's plaintext
``sensitivity`` column, so the policy can hide a category in SQL without opening bodies.
Pure: no database, no FastAPI.

A category is defined by ICD-10 code ranges (Condition.code, Encounter/Procedure/
MedicationRequest reasonCode, Encounter.diagnosis is a reference so not seen here,
Claim/ExplanationOfBenefit diagnosis), ATC codes (medications) and LOINC codes (tests).
The built-in table below is a deliberate, conservative default; operators override it
with a JSON file named by ``USMIS_SENSITIVITY_FILE`` of the same shape::

    {"hiv": {"icd10": ["B20-B24", "Z21"], "atc": ["J05AE"], "loinc": ["7917-8"]}, ...}

ICD-10 items are a code (``Z21``; matches Z21 and all its subcodes) or an inclusive range of
3-character categories (``B20-B24``).  ATC items are prefixes.  When several categories
match, the first in :data:`CATEGORIES` order wins (the most protected first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

CATEGORIES = ("hiv", "substance", "mental", "reproductive")

ICD10 = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")
ATC = "http://www.whocc.no/atc"
LOINC = "http://loinc.org"

BUILTIN: dict[str, dict[str, list[str]]] = {
    # HIV disease, asymptomatic HIV, inconclusive HIV test, HIV in pregnancy, HIV counselling.
    "hiv": {
        "icd10": ["B20-B24", "Z21", "R75", "O98.7", "Z71.7"],
        "atc": ["J05AE", "J05AF", "J05AG", "J05AJ", "J05AR"],
        "loinc": ["7917-8", "68961-2", "75622-1", "56888-1", "25835-0", "20447-9", "48345-3"],
    },
    # Mental and behavioural disorders due to psychoactive substance use; counselling.
    "substance": {
        "icd10": ["F10-F19", "Z71.4", "Z71.5", "Z50.2", "Z50.3"],
        "atc": ["N07BB", "N07BC"],
        "loinc": [],
    },
    # Mental and behavioural disorders (F00-F99 minus substance use, matched first).
    "mental": {
        "icd10": ["F00-F09", "F20-F99", "X60-X84", "Z91.5"],
        "atc": ["N05A", "N06A"],
        "loinc": [],
    },
    # Abortion / ectopic, contraception, procreative management, infertility, STIs.
    "reproductive": {
        "icd10": ["O00-O08", "Z30-Z32", "N96-N98", "N46", "A50-A64"],
        "atc": ["G03A"],
        "loinc": [],
    },
}


@dataclass(frozen=True)
class CategoryTable:
    # category -> ((low, high), ...) over normalised codes (no dot, upper case)
    icd10: dict[str, tuple[tuple[str, str], ...]]
    atc: dict[str, tuple[str, ...]]
    loinc: dict[str, frozenset[str]]

    @classmethod
    def build(cls, spec: dict[str, dict[str, list[str]]]) -> CategoryTable:
        icd: dict[str, tuple[tuple[str, str], ...]] = {}
        atc: dict[str, tuple[str, ...]] = {}
        loinc: dict[str, frozenset[str]] = {}
        for cat, parts in spec.items():
            ranges: list[tuple[str, str]] = []
            for item in parts.get("icd10", []):
                lo, _, hi = item.partition("-")
                lo_n, hi_n = _norm_icd(lo), _norm_icd(hi or lo)
                # A range of categories covers every subcode of its upper bound.
                ranges.append((lo_n, hi_n + "\uffff"))
            icd[cat] = tuple(ranges)
            atc[cat] = tuple(a.upper().replace(" ", "") for a in parts.get("atc", []))
            loinc[cat] = frozenset(parts.get("loinc", []))
        return cls(icd, atc, loinc)

    def categories(self) -> tuple[str, ...]:
        ordered = [c for c in CATEGORIES if c in self.icd10]
        return tuple(ordered + [c for c in self.icd10 if c not in ordered])


def _norm_icd(code: str) -> str:
    return code.strip().upper().replace(".", "")


_NOT_CODED = frozenset({"text", "div", "contained", "extension"})


def _codings(node: Any) -> list[tuple[str, str]]:
    """Every (system, code) anywhere in a resource (CodeableConcepts and Codings alike), in
    no particular order.  A loop over a stack: recursive generators cost a frame per level
    for every value passed up, and this runs on every resource written."""
    out: list[tuple[str, str]] = []
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        n = pop()
        if type(n) is list:
            stack.extend(n)
        elif type(n) is dict:
            code = n.get("code")
            if type(code) is str and type(system := n.get("system")) is str:
                out.append((system, code))
            for k, v in n.items():
                if (type(v) is dict or type(v) is list) and k not in _NOT_CODED:
                    push(v)
    return out


# Resource types that carry clinical meaning in their codes (others: never sensitive here).
CLASSIFIED_TYPES = frozenset(
    {
        "Condition", "Observation", "Procedure", "Encounter", "EpisodeOfCare",
        "MedicationRequest", "MedicationDispense", "MedicationStatement",
        "MedicationAdministration", "DiagnosticReport", "ServiceRequest", "Claim",
        "ClaimResponse", "ExplanationOfBenefit", "DocumentReference", "CarePlan",
        "Immunization", "AllergyIntolerance", "Composition",
    }
)


def classify_with(table: CategoryTable, resource: dict[str, Any]) -> str | None:
    if resource.get("resourceType") not in CLASSIFIED_TYPES:
        return None
    found: set[str] = set()
    for system, code in _codings(resource):
        if system in ICD10:
            c = _norm_icd(code)
            for cat, ranges in table.icd10.items():
                if any(lo <= c <= hi for lo, hi in ranges):
                    found.add(cat)
        elif system == ATC:
            c = code.upper().replace(" ", "")
            for cat, prefixes in table.atc.items():
                if any(c.startswith(p) for p in prefixes):
                    found.add(cat)
        elif system == LOINC:
            for cat, codes in table.loinc.items():
                if code in codes:
                    found.add(cat)
    for cat in table.categories():
        if cat in found:
            return cat
    return None


@lru_cache(maxsize=8)
def load_table(path: str | None = None) -> CategoryTable:
    if not path:
        return CategoryTable.build(BUILTIN)
    spec = json.loads(Path(path).read_text())
    return CategoryTable.build(spec)


def _configured_table() -> CategoryTable:
    from usmis.config import Settings

    path = Settings().sensitivity_file
    return load_table(str(path) if path else None)


def classify(resource: dict[str, Any]) -> str | None:
    """The consent category of ``resource`` (hiv | substance | mental | reproductive) or None."""
    return classify_with(_table(), resource)


_TABLE: CategoryTable | None = None


def _table() -> CategoryTable:
    global _TABLE
    if _TABLE is None:
        _TABLE = _configured_table()
    return _TABLE


def categories() -> tuple[str, ...]:
    return _table().categories()
