"""HL7 v2.3–2.5 → FHIR R4: ADT A01/A03/A04/A08/A40 and ORU R01.

Parsing uses the ``hl7`` library (python-hl7) for the header (see :class:`Message`); field
access goes through small helpers that never raise on absent fields, so a short segment
reads as empty.

Mapping (HL7 v2-to-FHIR IG, simplified to what the sources send):
- PID → Patient (PID-3 repetitions: type NI/NNKAZ/IIN → IIN, others → the source's id)
- PV1 → Encounter (PV1-19 visit number; A01 in-progress, A03 finished, A04 outpatient)
- DG1 → Condition (ICD-10) of that Encounter
- OBR → DiagnosticReport, OBX → Observation
- A40 (PID survivor + MRG-1 merged) → the survivor Patient with ``link`` replaces, and a
  merge recorded so the patient index can honour it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import hl7

from usmis.ingest.mapping.common import (
    BIN_SYSTEM,
    ICD10,
    IIN_SYSTEM,
    LOINC,
    UCUM,
    Mapped,
    Reject,
    full_url,
    hl7_datetime,
    iin_status,
    put_entry,
    source_system,
    source_uri,
    transaction,
)

PRACTITIONER_SYSTEM = source_system("reg_practitioners", "practitioner")
SUPPORTED = {
    ("ADT", "A01"),
    ("ADT", "A03"),
    ("ADT", "A04"),
    ("ADT", "A08"),
    ("ADT", "A40"),
    ("ORU", "R01"),
}
IIN_TYPES = {"NI", "NNKAZ", "IIN", "NN", "SS"}
_VERSION = re.compile(r"^2\.[345](\.\d+)?$")
_CHARSETS = {
    "": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/5": "iso8859-5",
    "CP1251": "cp1251",
    "WINDOWS-1251": "cp1251",
}

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


# --- reading messages --------------------------------------------------------------------


def normalize(raw: bytes) -> bytes:
    """One message with ``\\r`` segment terminators and no trailing ones: the form kept in
    the inbox, so one message framed differently (MLLP, lines, CRLF) hashes the same."""
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")


def split_messages(data: bytes) -> list[bytes]:
    """A batch file → messages: MLLP-framed (\\x0b…\\x1c\\r) or separated by blank lines/MSH."""
    if SB in data:
        out = []
        for chunk in data.split(EB):
            start = chunk.find(SB)
            if start >= 0:
                body = chunk[start + 1 :]
                if body.strip():
                    out.append(normalize(body))
        return out
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    messages: list[list[bytes]] = []
    for line in text.split(b"\n"):
        if not line.strip():
            continue
        if line.startswith(b"MSH") or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    return [b"\r".join(m) for m in messages]


class Header:
    """MSH read without the full parser: enough to authenticate, route and acknowledge."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        comp = fields[1][0] if len(fields) > 1 and fields[1] else "^"
        self.comp = comp

    def get(self, n: int) -> str:
        # MSH-1 is the field separator itself, so MSH-n is fields[n - 1].
        return self.fields[n - 1] if 0 < n <= len(self.fields) else ""

    @property
    def sending_app(self) -> str:
        return self.get(3).split(self.comp)[0]

    @property
    def sending_facility(self) -> str:
        return self.get(4).split(self.comp)[0]

    @property
    def security(self) -> str:
        return self.get(8)

    @property
    def message_type(self) -> tuple[str, str]:
        parts = self.get(9).split(self.comp)
        return (parts[0], parts[1] if len(parts) > 1 else "")

    @property
    def control_id(self) -> str:
        return self.get(10)

    @property
    def version(self) -> str:
        return self.get(12).split(self.comp)[0]

    @property
    def charset(self) -> str:
        return self.get(18).split("~")[0].strip().upper()


def read_header(raw: bytes) -> Header:
    """The MSH of a raw message; :class:`Reject` (AR) when there is none."""
    first = raw.lstrip(b"\r\n\x0b").split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        raise Reject("structure", "MSH", "message does not start with an MSH segment",
                     ack="AR", hl7_error=100)
    sep = chr(first[3])
    if sep != "|":
        # HL7 allows another separator in principle; no Kazakh system uses one, and a
        # different character here is, in practice, a broken MSH.
        raise Reject("structure", "MSH-1", "field separator is not '|'", ack="AR",
                     hl7_error=102)
    text = first.decode("latin-1")  # MSH routing fields are ASCII; latin-1 never fails
    fields = text.split(sep)
    return Header([sep, *fields[1:]])


def decode(raw: bytes, header: Header) -> str:
    charset = _CHARSETS.get(header.charset)
    if charset is None:
        raise Reject("encoding", "MSH-18", f"unsupported character set '{header.charset[:20]}'",
                     ack="AR", hl7_error=203)
    try:
        return raw.decode(charset)
    except UnicodeDecodeError:
        raise Reject("encoding", "MSH-18", f"bytes are not valid {charset}",
                     ack="AR", hl7_error=102) from None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_header(header: Header) -> None:
    """The refusals that concern the message as a whole (AR)."""
    enc = header.get(2)
    if len(enc) < 4 or len(set(enc[:4])) != 4 or any(c.isalnum() or c.isspace() for c in enc[:4]):
        raise Reject("structure", "MSH-2", "encoding characters are not four distinct "
                     "delimiters", ack="AR", hl7_error=102)
    if not _VERSION.match(header.version):
        raise Reject("version", "MSH-12", f"unsupported version '{header.version[:10]}'",
                     ack="AR", hl7_error=203)
    if not header.control_id:
        raise Reject("required", "MSH-10", "message control id is empty",
                     ack="AR", hl7_error=101)
    mtype = header.message_type
    if mtype not in SUPPORTED:
        code = 200 if mtype[0] not in {"ADT", "ORU"} else 201
        raise Reject("message-type", "MSH-9",
                     f"unsupported message type '{'^'.join(mtype)[:20]}'",
                     ack="AR", hl7_error=code)


def parse(raw: bytes) -> tuple[Header, Message]:
    header = read_header(raw)
    check_header(header)
    text = decode(raw, header).replace("\r\n", "\r").replace("\n", "\r").strip("\r\x0b\x1c ")
    if _CONTROL.search(text):
        raise Reject("structure", "message", "control characters in the message", ack="AR",
                     hl7_error=102)
    try:
        msg = Message(text.strip())
    except Exception:  # the library raises several types on broken input
        raise Reject("structure", "MSH", "message cannot be parsed", ack="AR",
                     hl7_error=100) from None
    for fields in msg.segments:
        if not _SEGMENT_ID.fullmatch(fields[0]):
            raise Reject("structure", "segment", "segment without a valid 3-character id",
                         ack="AE", hl7_error=100)
    return header, msg


# --- field access --------------------------------------------------------------------------

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")


class Message:
    """A message as the mapping reads it: each segment as its list of field strings.

    The ``hl7`` library parses the header's first two fields — it finds the separators and
    the escape character there (and unescapes values with them); every segment is then
    split on the field separator into the same field strings the library's parse of the
    whole message gives back (a property test holds the two equal), without building its
    repetition/component tree for every field: that tree, turned back into strings, was
    two thirds of the mapping's time, paid by the listener (for its ACK) and again by a
    worker."""

    def __init__(self, text: str) -> None:
        lines = text.split("\r")
        # The library reads the separators and the escape character off MSH-1 and MSH-2
        # (it raises on broken ones); only those two fields are given to it: the rest of
        # the header is split below like any segment (its whole parse cost ~60 µs).
        fs = lines[0][3:4] or "|"
        msh = lines[0].split(fs)
        self.head = hl7.parse(f"MSH{fs}{msh[1] if len(msh) > 1 else ''}{fs}")
        self.segments = [[msh[0], fs, *msh[1:]]] + [line.split(fs) for line in lines[1:]]
        self.rep, self.comp = self.head.separators[2], self.head.separators[3]

    def unescape(self, value: str) -> str:
        if self.head.esc not in value:  # most values: nothing to unescape
            return value
        return str(self.head.unescape(value))


class Seg:
    """One segment as plain strings: ``f(n)`` field, ``reps(n)``, ``c(n, k)`` component."""

    def __init__(self, msg: Message, fields: list[str]) -> None:
        self.name = fields[0]
        self._msg = msg
        self._fields = fields

    def f(self, n: int) -> str:
        return self._fields[n] if n < len(self._fields) else ""

    def reps(self, n: int) -> list[str]:
        return [r for r in self.f(n).split(self._msg.rep) if r]

    def comps(self, value: str) -> list[str]:
        return [self._msg.unescape(c) for c in value.split(self._msg.comp)]

    def c(self, n: int, k: int = 1, rep: int = 0) -> str:
        r = self.reps(n)
        if rep >= len(r):
            return ""
        parts = r[rep].split(self._msg.comp)
        return self._msg.unescape(parts[k - 1]) if k <= len(parts) else ""


def segments(msg: Message, name: str) -> list[Seg]:
    return [Seg(msg, s) for s in msg.segments if s[0] == name]


def one(msg: Message, name: str, *, required: bool = True) -> Seg | None:
    found = segments(msg, name)
    if not found:
        if required:
            raise Reject("required", name, f"{name} segment is missing", hl7_error=100)
        return None
    return found[0]


def _ts(seg: Seg, n: int, *, personal: bool = False) -> tuple[str, datetime] | None:
    value = seg.c(n)
    if not value:
        return None
    return hl7_datetime(value, f"{seg.name}-{n}", personal=personal)


# --- mapping -------------------------------------------------------------------------------


def map_message(raw: bytes, source_id: str) -> Mapped:
    """One raw HL7 message → a transaction Bundle (or :class:`Reject`)."""
    header, msg = parse(raw)
    mtype, trigger = header.message_type
    evn = one(msg, "EVN", required=False)
    msh = Seg(msg, msg.segments[0])
    event = (_ts(evn, 2) if evn else None) or _ts_msh(msh)
    pid = one(msg, "PID")
    assert pid is not None
    patient, pid_value, iin = _patient(pid, source_id)
    pat_sys = source_system(source_id, "patient")
    pat_ref = {"reference": full_url(pat_sys, pid_value)}
    entries = [put_entry(patient, pat_sys, pid_value)]
    out = Mapped(bundle={}, event_time=event[1] if event else None,
                 message_id=header.control_id, iin_status=iin_status(iin))
    if mtype == "ADT" and trigger == "A40":
        mrg = one(msg, "MRG")
        assert mrg is not None
        old = mrg.c(1)
        if not old:
            raise Reject("required", "MRG-1", "prior patient identifier is empty", hl7_error=101)
        patient["link"] = [{
            "other": {"identifier": {"system": pat_sys, "value": old}},
            "type": "replaces",
        }]
        out.merges.append((pid_value, old))
    elif mtype == "ADT" and trigger == "A08":
        pass  # A08 updates the patient's data only (the stay is the A01/A03's business)
    elif mtype == "ADT":
        pv1 = one(msg, "PV1")
        assert pv1 is not None
        enc, enc_value = _encounter(pv1, trigger, source_id, pat_ref, event)
        enc_sys = source_system(source_id, "encounter")
        entries.append(put_entry(enc, enc_sys, enc_value))
        enc_ref = {"reference": full_url(enc_sys, enc_value)}
        for dg1 in segments(msg, "DG1"):
            entries.append(_condition(dg1, source_id, pat_ref, enc_ref, enc_value))
    else:  # ORU^R01
        entries.extend(_results(msg, source_id, pat_ref, event))
    out.bundle = transaction(entries)
    for e in out.bundle["entry"]:
        e["resource"].setdefault("meta", {})["source"] = source_uri(source_id)
    return out


def _ts_msh(msh: Seg) -> tuple[str, datetime] | None:
    value = msh.c(7)  # python-hl7 numbers MSH so that index n is MSH-n
    return hl7_datetime(value, "MSH-7") if value else None


def _patient(pid: Seg, source_id: str) -> tuple[dict[str, Any], str, str | None]:
    own: str | None = None
    iin: str | None = None
    for i, rep in enumerate(pid.reps(3)):
        parts = pid.comps(rep)
        value = parts[0].strip()
        id_type = parts[4].upper() if len(parts) > 4 else ""
        authority = parts[3].upper() if len(parts) > 3 else ""
        if not value:
            continue
        if id_type in IIN_TYPES or "IIN" in authority:
            if iin is None:
                iin = value
        elif own is None:
            own = value
        del i
    if own is None:
        raise Reject("required", "PID-3", "no source patient identifier in PID-3",
                     hl7_error=101)
    pat_sys = source_system(source_id, "patient")
    identifiers: list[dict[str, Any]] = [{"use": "usual", "system": pat_sys, "value": own}]
    if iin:
        identifiers.append({"use": "official", "system": IIN_SYSTEM, "value": iin})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    names = []
    for rep in pid.reps(5):
        parts = pid.comps(rep)
        family = parts[0] if parts else ""
        given = [p for p in parts[1:3] if p]
        if family or given:
            name: dict[str, Any] = {"use": "official"}
            if family:
                name["family"] = family
            if given:
                name["given"] = given
            names.append(name)
    if names:
        patient["name"] = names
    birth = _ts(pid, 7, personal=True)
    if birth:
        patient["birthDate"] = birth[0][:10]
    sex = pid.c(8).upper()
    if sex:
        gender = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other",
                  "N": "unknown"}.get(sex)
        if gender is None:
            raise Reject("code", "PID-8", f"administrative sex '{sex[:5]}' not in table 0001",
                         hl7_error=103)
        patient["gender"] = gender
    addresses = []
    for rep in pid.reps(11):
        p = pid.comps(rep) + [""] * 6
        addr = {k: v for k, v in (("city", p[2]), ("state", p[3]), ("postalCode", p[4]),
                                  ("country", p[5])) if v}
        lines = [x for x in p[:2] if x]
        if lines:
            addr["line"] = lines  # type: ignore[assignment]
        if addr:
            addresses.append(addr)
    if addresses:
        patient["address"] = addresses
    phones = [pid.comps(r)[0] for r in pid.reps(13)]
    phones = [p for p in phones if p]
    if phones:
        patient["telecom"] = [{"system": "phone", "value": p} for p in phones]
    death = _ts(pid, 29, personal=True)
    if death:
        patient["deceasedDateTime"] = death[0]
    elif pid.c(30).upper() == "Y":
        patient["deceasedBoolean"] = True
    return patient, own, iin


_CLASS = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "AMB"}


def _encounter(
    pv1: Seg, trigger: str, source_id: str, pat_ref: dict[str, str],
    event: tuple[str, datetime] | None,
) -> tuple[dict[str, Any], str]:
    visit = pv1.c(19)
    if not visit:
        raise Reject("required", "PV1-19", "visit number is empty", hl7_error=101)
    klass = pv1.c(2).upper() or ("IMP" if trigger in {"A01", "A03"} else "O")
    code = _CLASS.get(klass, klass if klass in {"IMP", "AMB", "EMER"} else "")
    if not code:
        raise Reject("code", "PV1-2", f"patient class '{klass[:5]}' not in table 0004",
                     hl7_error=103)
    status = {"A01": "in-progress", "A03": "finished", "A04": "finished"}.get(trigger,
                                                                               "in-progress")
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [{"system": source_system(source_id, "encounter"), "value": visit}],
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code},
        "subject": pat_ref,
    }
    start = _ts(pv1, 44) or (event if trigger in {"A01", "A04"} else None)
    end = _ts(pv1, 45) or (event if trigger == "A03" else None)
    period = {}
    if start:
        period["start"] = start[0]
    if end:
        period["end"] = end[0]
    if start and end and end[1] < start[1]:
        raise Reject("date-order", "PV1-45", "discharge is before admission")
    if period:
        enc["period"] = period
    doctor = pv1.c(7)
    if doctor:
        # Practitioner ids are the national register's (reg_practitioners), used by all.
        enc["participant"] = [{"individual": {"type": "Practitioner", "identifier": {
            "system": PRACTITIONER_SYSTEM, "value": doctor}}}]
    facility = pv1.c(3, 4)
    if facility:
        # PV1-3.4 (assigning facility) carries the organization's BIN.
        system = BIN_SYSTEM if re.fullmatch(r"\d{12}", facility) else source_system(
            source_id, "organization")
        enc["serviceProvider"] = {"type": "Organization",
                                  "identifier": {"system": system, "value": facility}}
    ward = pv1.c(3, 1)
    if ward:
        enc["location"] = [{"location": {"display": ward}}]
    return enc, visit


def _condition(dg1: Seg, source_id: str, pat_ref: dict[str, str], enc_ref: dict[str, str],
               visit: str) -> dict[str, Any]:
    code = dg1.c(3)
    if not code:
        raise Reject("required", "DG1-3", "diagnosis code is empty", hl7_error=101)
    if not re.fullmatch(r"[A-Z]\d{2}(\.\d{1,2})?", code.upper()):
        raise Reject("code", "DG1-3", f"'{code[:10]}' is not an ICD-10 code", hl7_error=103)
    # DG1-6 (A admitting, W working, F final) keeps an admission and a discharge diagnosis
    # of one stay apart; DG1-1 numbers them within the message.
    value = f"{visit}-{dg1.c(6)}{dg1.f(1) or code}"
    sys = source_system(source_id, "condition")
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "identifier": [{"system": sys, "value": value}],
        "subject": pat_ref,
        "encounter": enc_ref,
        "code": {"coding": [{"system": ICD10, "code": code.upper(),
                             **({"display": dg1.c(3, 2)} if dg1.c(3, 2) else {})}]},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "encounter-diagnosis"}]}],
    }
    when = _ts(dg1, 5)
    if when:
        cond["recordedDate"] = when[0]
    return put_entry(cond, sys, value)


_OBX_STATUS = {"F": "final", "P": "preliminary", "C": "amended", "X": "cancelled",
               "R": "preliminary", "I": "registered", "D": "entered-in-error", "": "final"}


def _results(msg: Message, source_id: str, pat_ref: dict[str, str],
             event: tuple[str, datetime] | None) -> list[dict[str, Any]]:
    obrs = segments(msg, "OBR")
    if not obrs:
        raise Reject("required", "OBR", "OBR segment is missing", hl7_error=100)
    entries: list[dict[str, Any]] = []
    # OBX segments belong to the OBR before them (ORU_R01 ORDER_OBSERVATION group).
    groups: list[tuple[Seg, list[Seg]]] = []
    for fields in msg.segments:
        if fields[0] == "OBR":
            groups.append((Seg(msg, fields), []))
        elif fields[0] == "OBX" and groups:
            groups[-1][1].append(Seg(msg, fields))
    rep_sys = source_system(source_id, "report")
    obs_sys = source_system(source_id, "observation")
    for obr, obxs in groups:
        order = obr.c(3) or obr.c(2)
        if not order:
            raise Reject("required", "OBR-3", "filler order number is empty", hl7_error=101)
        when = _ts(obr, 7) or event
        results = []
        for obx in obxs:
            obs, key = _observation(obx, order, obs_sys, pat_ref, when)
            entries.append(put_entry(obs, obs_sys, key))
            results.append({"reference": full_url(obs_sys, key)})
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": rep_sys, "value": order}],
            "status": {"F": "final", "P": "preliminary", "C": "corrected"}.get(
                obr.c(25).upper(), "final"),
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": _code(obr, 4),
            "subject": pat_ref,
            "result": results,
        }
        if when:
            report["effectiveDateTime"] = when[0]
        entries.append(put_entry(report, rep_sys, order))
    return entries


def _code(seg: Seg, n: int) -> dict[str, Any]:
    code = seg.c(n, 1)
    if not code:
        raise Reject("required", f"{seg.name}-{n}", "code is empty", hl7_error=101)
    system_name = seg.c(n, 3).upper()
    system = LOINC if system_name in {"LN", "LOINC", ""} else f"urn:hl7v2:{system_name}"
    coding: dict[str, Any] = {"system": system, "code": code}
    if seg.c(n, 2):
        coding["display"] = seg.c(n, 2)
    return {"coding": [coding]}


def _observation(obx: Seg, order: str, obs_sys: str, pat_ref: dict[str, str],
                 when: tuple[str, datetime] | None) -> tuple[dict[str, Any], str]:
    key = f"{order}-{obx.f(1) or obx.c(3)}"
    status = _OBX_STATUS.get(obx.c(11).upper())
    if status is None:
        raise Reject("code", "OBX-11", f"result status '{obx.c(11)[:5]}' not in table 0085",
                     hl7_error=103)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": obs_sys, "value": key}],
        "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"}]}],
        "code": _code(obx, 3),
        "subject": pat_ref,
    }
    vtype = obx.c(2).upper()
    value = obx.c(5)
    if value:
        if vtype in {"NM", "SN"}:
            try:
                number = float(value.replace(",", "."))
            except ValueError:
                raise Reject("data-type", "OBX-5",
                             f"value '{value[:20]}' is not numeric (OBX-2 {vtype})") from None
            unit = obx.c(6)
            q: dict[str, Any] = {"value": number}
            if unit:
                q.update(unit=unit, system=UCUM, code=unit)
            obs["valueQuantity"] = q
        elif vtype in {"CE", "CWE", "CNE"}:
            obs["valueCodeableConcept"] = {"coding": [{"code": value,
                                                       "display": obx.c(5, 2) or value}]}
        else:
            obs["valueString"] = value
    elif status == "final":
        raise Reject("required", "OBX-5", "final result without a value", hl7_error=101)
    ref_range = obx.c(7)
    if ref_range:
        obs["referenceRange"] = [{"text": ref_range}]
    flag = obx.c(8).upper()
    if flag:
        obs["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": flag}]}]
    t = _ts(obx, 14) or when
    if t:
        obs["effectiveDateTime"] = t[0]
    return obs, key


# --- acknowledgements ----------------------------------------------------------------------


def ack(header: Header | None, code: str, reject: Reject | None = None,
        *, now: datetime | None = None) -> bytes:
    """An ACK (MSA-1 AA/AE/AR; ERR with the location for AE/AR), MLLP-unframed, UTF-8."""
    ts = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    if header is not None:
        recv_app, recv_fac = header.sending_app, header.sending_facility
        trigger = header.message_type[1]
        control, version = header.control_id, header.version or "2.5"
    else:
        recv_app = recv_fac = trigger = control = ""
        version = "2.5"
    if not _VERSION.match(version):
        version = "2.5"
    clean = _clean
    segs = [
        f"MSH|^~\\&|USMIS|USMIS|{clean(recv_app)}|{clean(recv_fac)}|{ts}||ACK^{clean(trigger)}"
        f"^ACK|ACK{clean(control)[:16]}{ts}|P|{version}",
        f"MSA|{code}|{clean(control)}" + (f"|{clean(reject.detail)[:80]}" if reject else ""),
    ]
    if reject is not None:
        seg, _, fld = reject.field.partition("-")
        seg = seg if re.fullmatch(r"[A-Z][A-Z0-9]{2}", seg) else ""
        fld = fld if fld.isdigit() else ""
        text = clean(f"{reject.rule}: {reject.detail}")[:200]
        error_name = _ERRORS.get(reject.hl7_error, "Application error")
        # ERR-1 (ELD, v2.3/2.4) and ERR-2/3/4/8 (v2.5) both say where and what.
        eld = f"{seg}^1^{fld}^{reject.hl7_error}&{error_name}&HL70357"
        loc = f"{seg}^1^{fld}" if seg else ""
        segs.append(f"ERR|{eld}|{loc}|{reject.hl7_error}^{error_name}^HL70357|E||||{text}")
    return ("\r".join(segs) + "\r").encode("utf-8")


_ERRORS = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    207: "Application internal error",
}


def _clean(value: str) -> str:
    """Strip HL7 delimiters and control characters from text echoed into an ACK."""
    return re.sub(r"[|^~\\&\r\n\x00-\x1f]", " ", value)
