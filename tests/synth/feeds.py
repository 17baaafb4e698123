"""Readers of a generated nation for the tests: standard parsers only (hl7, fhirclient, csv)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import hl7
from fhirclient.models.bundle import Bundle

SID = "https://usmis.kz/sid/source/"
IIN = "https://usmis.kz/sid/iin"


@dataclass
class Nation:
    root: Path

    def __post_init__(self) -> None:
        self.sources: list[dict[str, Any]] = json.loads((self.root / "sources.json").read_text())
        self.by_id = {s["id"]: s for s in self.sources}
        self.malformed: dict[str, set[int]] = {}
        for r in self.gt("malformed.csv"):
            self.malformed.setdefault(r["file"], set()).add(int(r["index"]))

    def gt(self, name: str) -> list[dict[str, str]]:
        with (self.root / "ground_truth" / name).open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    # -- records, malformed ones skipped ----------------------------------------------------
    def hl7_messages(self, sid: str) -> Iterator[tuple[str, int, Any]]:
        for rel in self.by_id[sid]["files"]:
            raw = (self.root / rel).read_bytes()
            bad = self.malformed.get(rel, set())
            for i, chunk in enumerate(raw.split(b"\x1c\r")[:-1], 1):
                assert chunk.startswith(b"\x0b")
                if i in bad:
                    continue
                yield rel, i, hl7.parse(chunk[1:].decode("utf-8"))

    def bundles(self, sid: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        for rel in self.by_id[sid]["files"]:
            bad = self.malformed.get(rel, set())
            with (self.root / rel).open("rb") as f:
                for i, line in enumerate(f, 1):
                    if i in bad:
                        continue
                    yield rel, i, json.loads(line.decode("utf-8"))

    def rows(self, sid: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """Rows of a file source by column name (CSV via the csv module), malformed skipped."""
        s = self.by_id[sid]
        for rel in s["files"]:
            bad = self.malformed.get(rel, set())
            raw = (self.root / rel).read_bytes()
            if s["format"] == "ndjson":
                for i, line in enumerate(raw.split(b"\n")[:-1], 1):
                    if i not in bad:
                        yield rel, i, json.loads(line.decode("utf-8"))
                continue
            term = b"\r\n" if s["encoding"] == "cp1251" else b"\n"
            lines = raw.split(term)[:-1]
            header = next(csv.reader([lines[0].decode(s["encoding"])], delimiter=s["delimiter"]))
            for i, line in enumerate(lines[1:], 2):
                if i in bad:
                    continue
                row = next(csv.reader(io.StringIO(line.decode(s["encoding"])),
                                      delimiter=s["delimiter"]))
                assert len(row) == len(header), (rel, i)
                yield rel, i, dict(zip(header, row, strict=True))

    def validate_bundle(self, obj: dict[str, Any]) -> Bundle:
        return Bundle(obj, strict=True)


def parse_date(s: str, fmt: str) -> date:
    return datetime.strptime(s, fmt).date()


def num(s: Any, comma: bool) -> float:
    if isinstance(s, int | float):
        return float(s)
    return float(s.replace(",", ".")) if comma else float(s)


@dataclass
class Claim:
    source: str
    claim_id: str
    provider_bin: str
    practitioner: str
    person: str
    code: str
    day: date
    units: float
    amount: float
    src_system: str
    src_record_id: str
    discharge: date | None = None


def claims(n: Nation) -> list[Claim]:
    """All fund claims with the true person (via the fund's local id in source_records)."""
    person = {(r["source_id"], r["local_id"]): r["person_id"]
              for r in n.gt("source_records.csv") if r["source_id"].startswith("fund_")}
    out: list[Claim] = []
    keys = {
        "fund_claims_outpatient": ("ID_СЧЕТА", "БИН_ПОСТАВЩИКА", "ID_ВРАЧА", "ID_ЗАСТРАХОВАННОГО",
                                   "КОД_УСЛУГИ", "ДАТА_УСЛУГИ", "КОЛ_ВО", "СУММА",
                                   "СИСТЕМА_ИСТОЧНИК", "ID_ЗАПИСИ_ИСТОЧНИКА", None),
        "fund_claims_inpatient": ("claim_id", "provider_bin", "practitioner_id", "insured_id",
                                  "case_group", "admission_date", "units", "amount",
                                  "src_system", "src_record_id", "discharge_date"),
        "fund_claims_drugs": ("claimId", "pharmacyBin", "prescriberId", "insuredId", "atc",
                              "dispensedOn", "quantity", "amount", "srcSystem", "srcRecordId",
                              None),
    }
    seen: set[str] = set()
    for sid, k in keys.items():
        s = n.by_id[sid]
        comma = s["decimal_separator"] == ","
        for _, _, r in n.rows(sid):
            if r[k[0]] in seen:
                continue
            seen.add(r[k[0]])
            out.append(Claim(
                sid, r[k[0]], r[k[1]], r[k[2]], person[(sid, r[k[3]])], r[k[4]],
                parse_date(r[k[5]], s["date_format"]), num(r[k[6]], comma), num(r[k[7]], comma),
                r[k[8]], r[k[9]],
                parse_date(r[k[10]], s["date_format"]) if k[10] else None))
    out.sort(key=lambda c: c.claim_id)
    return out
