"""Feed writers: one per source, streaming to disk in the source's encoding and framing.

A writer also plants the source's malformed records: a broken copy is written in place
and the corrected record is re-sent in the source's ``-late`` file (as a real sender
re-sends after a rejection), so no information is lost and the ground truth of care and
fraud holds whether or not a receiver salvages the broken copy.
"""

from __future__ import annotations

import codecs
import csv
import io
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from usmis.synth.names import russify
from usmis.synth.sources import Source

MLLP_START = b"\x0b"
MLLP_END = b"\x1c\x0d"
RUSSIFY_ERRORS = "usmis_russify"


def _russify_errors(exc: UnicodeError) -> tuple[str, int]:
    """Encode error handler: Kazakh letters become their Russian look-alikes (cp1251 has
    no Kazakh letters, and that is exactly what such systems store)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return russify(exc.object[exc.start:exc.end]).encode("cp1251", "replace").decode(
        "cp1251"), exc.end


codecs.register_error(RUSSIFY_ERRORS, _russify_errors)


class GroundTruthCsv:
    """A UTF-8 CSV file of the ground truth, written row by row."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self._f = path.open("w", encoding="utf-8", newline="")
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow(header)
        self.rows = 0

    def write(self, row: list[Any]) -> None:
        self._w.writerow(row)
        self.rows += 1

    def close(self) -> None:
        self._f.close()


MalformedSink = Callable[[str, str, int, str, str], None]  # source, file, index, control, reason


class _Part:
    """One open feed file and its record counter."""

    def __init__(self, path: Path, rel: str, encoding: str, binary: bool) -> None:
        self.rel = rel
        self.records = 0
        self.bin = path.open("wb", buffering=1 << 16) if binary else None
        self.text: io.TextIOWrapper | None = None
        if not binary:
            self.text = path.open("w", encoding=encoding, newline="", buffering=1 << 16,
                                  errors=RUSSIFY_ERRORS if encoding == "cp1251" else "strict")

    def close(self) -> None:
        if self.bin is not None:
            self.bin.close()
        if self.text is not None:
            self.text.close()


class FeedWriter:
    """Writes one source's records: HL7 messages, FHIR bundles or table rows."""

    def __init__(
        self, out: Path, source: Source, rng: random.Random, malformed_rate: float,
        malformed: MalformedSink, per_file: int,
    ) -> None:
        self.source = source
        self.rng = rng
        self.malformed_rate = malformed_rate
        self._malformed = malformed
        self.per_file = per_file
        self.dir = out / "feeds" / source.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files: list[str] = []
        self.counts: Counter[str] = Counter()  # well-formed records by kind
        self.malformed_counts: Counter[str] = Counter()
        self.resent: Counter[str] = Counter()
        self._part: _Part | None = None
        self._late: _Part | None = None
        self._csv: Any = None
        self._late_csv: Any = None
        self._seq = 0
        self._keys = [k for _, k, _ in source.columns]

    # -- files -----------------------------------------------------------------------------
    def _open(self, name: str) -> _Part:
        rel = f"feeds/{self.source.id}/{name}"
        binary = self.source.format not in ("csv", "tsv")
        part = _Part(self.out / rel, rel, self.source.encoding, binary)
        self.files.append(rel)
        if self.source.format in ("csv", "tsv") and part.text is not None:
            header = [c for c, _, _ in self.source.columns]
            self._writer_for(part).writerow(header)
        return part

    def _writer_for(self, part: _Part) -> Any:
        assert part.text is not None
        return csv.writer(
            part.text, delimiter=self.source.delimiter or ",", lineterminator="\r\n"
            if self.source.encoding == "cp1251" else "\n",
        )

    def _current(self) -> _Part:
        # Extracts are one file per source (docs/nation.md); only message feeds roll over.
        rolls = self.source.channel != "file" and self.per_file
        if self._part is None or (rolls and self._part.records >= self.per_file):
            if self._part is not None:
                self._part.close()
            self._seq += 1
            name = f"{self.source.id}-{self._seq:04d}.{self.source.ext}"
            if self.source.channel == "file":
                name = f"{self.source.id}.{self.source.ext}"
            self._part = self._open(name)
            self._csv = self._writer_for(self._part) if self._part.text and \
                self.source.format in ("csv", "tsv") else None
        return self._part

    def _late_part(self) -> _Part:
        if self._late is None:
            self._late = self._open(f"{self.source.id}-late.{self.source.ext}")
            self._late_csv = self._writer_for(self._late) if self._late.text and \
                self.source.format in ("csv", "tsv") else None
        return self._late

    def close(self) -> None:
        for p in (self._part, self._late):
            if p is not None:
                p.close()
        # the late file must come last in the list, whenever it was opened
        late = [f for f in self.files if f.endswith(f"-late.{self.source.ext}")]
        self.files = [f for f in self.files if f not in late] + late

    # -- HL7 v2 ------------------------------------------------------------------------------
    def message(self, segments: list[str], control_id: str, kind: str, late: bool = False) -> None:
        """One HL7 message (segments without terminators), MLLP-framed."""
        text = "\r".join(segments) + "\r"
        if not late and self.malformed_rate and self.rng.random() < self.malformed_rate:
            broken, reason, cid = _break_hl7(segments, control_id, self.rng)
            part = self._current()
            assert part.bin is not None
            part.bin.write(MLLP_START + broken + MLLP_END)
            part.records += 1
            self._malformed(self.source.id, part.rel, part.records, cid, reason)
            self.malformed_counts[kind] += 1
            late = True  # the corrected message is re-sent later
        part = self._late_part() if late else self._current()
        assert part.bin is not None
        part.bin.write(MLLP_START + text.encode("utf-8") + MLLP_END)
        part.records += 1
        self.counts[kind] += 1

    def resend_message(self, segments: list[str], kind: str) -> None:
        """An exact re-send of a message already written (same control id)."""
        part = self._current()
        assert part.bin is not None
        part.bin.write(MLLP_START + ("\r".join(segments) + "\r").encode("utf-8") + MLLP_END)
        part.records += 1
        self.resent[kind] += 1

    # -- FHIR bundles ------------------------------------------------------------------------
    def bundle(self, bundle: dict[str, Any], kinds: list[str], late: bool = False) -> None:
        """One Bundle as one NDJSON line; ``kinds`` are the resource types it carries."""
        data = orjson.dumps(bundle)
        if not late and self.malformed_rate and self.rng.random() < self.malformed_rate:
            broken, reason = _break_bundle(bundle, data, self.rng)
            part = self._current()
            assert part.bin is not None
            part.bin.write(broken + b"\n")
            part.records += 1
            self._malformed(self.source.id, part.rel, part.records, str(bundle.get("id", "")),
                            reason)
            self.malformed_counts["Bundle"] += 1
            late = True
        part = self._late_part() if late else self._current()
        assert part.bin is not None
        part.bin.write(data + b"\n")
        part.records += 1
        self.counts["Bundle"] += 1
        for k in kinds:
            self.counts[k] += 1

    def resend_bundle(self, bundle: dict[str, Any]) -> None:
        part = self._current()
        assert part.bin is not None
        part.bin.write(orjson.dumps(bundle) + b"\n")
        part.records += 1
        self.resent["Bundle"] += 1

    # -- table rows --------------------------------------------------------------------------
    def row(self, values: dict[str, Any], late: bool = False, may_break: bool = True) -> None:
        """One extract row; ``values`` are keyed by the generator's internal field keys."""
        src = self.source
        if may_break and not late and self.malformed_rate and \
                self.rng.random() < self.malformed_rate:
            self._broken_row(values)
            late = True
        part = self._late_part() if late else self._current()
        if src.format == "ndjson":
            obj = {c: values.get(k) for c, k, _ in src.columns}
            assert part.bin is not None
            part.bin.write(orjson.dumps(obj) + b"\n")
        else:
            w = self._late_csv if late else self._csv
            get = values.get
            w.writerow([get(k, "") for k in self._keys])
        part.records += 1
        self.counts["row"] += 1

    def _broken_row(self, values: dict[str, Any]) -> None:
        src = self.source
        part = self._current()
        line = part.records + (1 if src.format in ("csv", "tsv") else 0) + 1
        kind = self.rng.randrange(3)
        if src.format == "ndjson":
            obj = {c: values.get(k) for c, k, _ in src.columns}
            data = orjson.dumps(obj)
            if kind == 0:
                raw, reason = data[: len(data) // 2], "truncated JSON object"
            elif kind == 1:
                raw, reason = b"\xff\xfe" + data, "bytes not valid UTF-8"
            else:
                date_key = next((c for c, k, _ in src.columns if k.endswith("date")), None)
                if date_key is None:
                    raw, reason = data[:-1], "truncated JSON object"
                else:
                    obj[date_key] = 20240231
                    raw, reason = orjson.dumps(obj), f"wrong type: {date_key} is not a date string"
            assert part.bin is not None
            part.bin.write(raw + b"\n")
        else:
            cells = [_cell(values.get(k)) for _, k, _ in src.columns]
            assert part.text is not None
            if kind == 0:
                cells = cells[: max(1, len(cells) - 3)]
                reason = "wrong number of columns"
                self._csv.writerow(cells)
            elif kind == 1:
                i = next((j for j, (_, k, _) in enumerate(src.columns) if k.endswith("date")), 0)
                cells[i] = "31.02.20X4"
                reason = f"invalid date in column {src.columns[i][0]}"
                self._csv.writerow(cells)
            else:
                part.text.flush()
                sep = (src.delimiter or ",").encode()
                bad = b"\x98\x98" if src.encoding == "cp1251" else b"\xc3\x28\xff"
                enc = [c.encode(src.encoding, errors=RUSSIFY_ERRORS
                                if src.encoding == "cp1251" else "strict") for c in cells]
                enc[min(2, len(enc) - 1)] = bad
                term = b"\r\n" if src.encoding == "cp1251" else b"\n"
                part.text.buffer.write(sep.join(enc) + term)
                reason = f"bytes not valid {src.encoding}"
        part.records += 1
        self._malformed(src.id, part.rel, line, "", reason)
        self.malformed_counts["row"] += 1


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else str(v)


def _break_hl7(segments: list[str], control_id: str, rng: random.Random) -> tuple[bytes, str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        # PID cut in the middle: the segment loses its identifier and name fields
        segs = [s if not s.startswith("PID") else s[:5] for s in segments]
        return ("\r".join(segs) + "\r").encode(), "PID segment truncated: PID-3 missing", \
            control_id
    if kind == 1:
        segs = [s.replace("|", "#", 3) if s.startswith("MSH") else s for s in segments]
        return ("\r".join(segs) + "\r").encode(), "MSH segment broken: bad field separator", ""
    if kind == 2:
        segs = list(segments)
        for i, s in enumerate(segs):
            if s.startswith("PID"):
                f = s.split("|")
                if len(f) > 7:
                    f[7] = "1990-13-45"
                segs[i] = "|".join(f)
        return ("\r".join(segs) + "\r").encode(), "PID-7 is not an HL7 date", control_id
    raw = ("\r".join(segments) + "\r").encode()
    return raw[:30] + b"\xff\xfe\xfa" + raw[30:], "bytes not valid UTF-8", ""


def _break_bundle(bundle: dict[str, Any], data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.randrange(3)
    if kind == 0:
        return data[: len(data) * 2 // 3], "truncated JSON"
    if kind == 1:
        b = orjson.loads(data)
        for e in b["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                e["resource"]["birthDate"] = 19900231
        return orjson.dumps(b), "Patient.birthDate has the wrong type"
    b = orjson.loads(data)
    for e in b["entry"]:
        if e["resource"]["resourceType"] == "Encounter":
            del e["resource"]["status"]
            del e["resource"]["class"]
    return orjson.dumps(b), "Encounter.status and Encounter.class missing"

