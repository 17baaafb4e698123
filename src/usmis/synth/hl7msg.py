"""HL7 v2.5 segments for hospital and laboratory systems (ADT A01/A03/A04/A08/A40, ORU R01).

Segments are returned without terminators; the feed writer joins them with ``\\r`` and
frames the message for MLLP.  Field positions follow HL7 v2.5 chapter 3 (PID, PV1, MRG)
and chapter 7 (OBR, OBX).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from usmis.synth.views import View

_EPOCH = datetime(2000, 1, 1)


_DAY: dict[int, str] = {}


def dt(day: int) -> str:
    s = _DAY.get(day)
    if s is None:
        s = _DAY[day] = f"{date.fromordinal(day):%Y%m%d}"
    return s


def dtm(day: int, minute: int) -> str:
    """HL7 DTM (YYYYMMDDHHMMSS) of an ordinal day and a minute of that day."""
    return f"{dt(day)}{minute // 60:02d}{minute % 60:02d}00"


def _esc(s: str) -> str:
    # HL7 v2.5 2.7: escape the delimiters that might occur in free text
    if not ("|" in s or "^" in s or "~" in s or "\\" in s or "&" in s):
        return s
    return (s.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("~", "\\R\\").replace("&", "\\T\\"))


def msh(source_id: str, org_bin: str, when: str, msg_type: str, control_id: str) -> str:
    return (f"MSH|^~\\&|{source_id.upper()}|{org_bin}|USMIS|MOH|{when}||{msg_type}|{control_id}"
            f"|P|2.5|||AL|NE||UNICODE UTF-8")


def evn(code: str, when: str) -> str:
    return f"EVN|{code}|{when}"


def pid(v: View, address: str, city: str, region: str, phone: str) -> str:
    ids = f"{v.local_id}^^^{v.source}^MR"
    if v.iin:
        ids += f"~{v.iin}^^^KZIIN^NN"
    name = f"{_esc(v.surname)}^{_esc(v.given)}^{_esc(v.patronymic)}"
    addr = f"{_esc(address)}^^{_esc(city)}^{_esc(region)}^^KZ"
    return f"PID|1||{ids}||{name}||{dt(v.birth)}|{v.sex}|||{addr}||{phone}"


def pv1(patient_class: str, org_bin: str, ward: str, doctor: tuple[str, str, str],
        visit_no: str, admit: str, discharge: str = "", disposition: str = "") -> str:
    f = [""] * 46
    f[0] = "PV1"
    f[1] = "1"
    f[2] = patient_class
    f[3] = f"{ward}^^^{org_bin}"
    f[7] = f"{doctor[0]}^{_esc(doctor[1])}^{_esc(doctor[2])}"
    f[19] = visit_no
    f[36] = disposition
    f[44] = admit
    f[45] = discharge
    return "|".join(f)


def dg1(set_id: int, icd: str, when: str, kind: str) -> str:
    return f"DG1|{set_id}||{icd}^^I10||{when}|{kind}"


def mrg(prior_id: str, source_id: str) -> str:
    return f"MRG|{prior_id}^^^{source_id}^MR"


def orc(placer: str, filler: str) -> str:
    return f"ORC|RE|{placer}|{filler}"


def obr(placer: str, filler: str, panel: str, panel_name: str, collected: str,
        doctor: tuple[str, str, str], reported: str) -> str:
    f = [""] * 26
    f[0] = "OBR"
    f[1] = "1"
    f[2] = placer
    f[3] = filler
    f[4] = f"{panel}^{panel_name}^LN"
    f[7] = collected
    f[16] = f"{doctor[0]}^{_esc(doctor[1])}^{_esc(doctor[2])}"
    f[22] = reported
    f[25] = "F"
    return "|".join(f)


def obx(set_id: int, loinc: str, name: str, value: str, unit: str, low: str, high: str,
        flag: str, when: str) -> str:
    return f"OBX|{set_id}|NM|{loinc}^{name}^LN||{value}|{unit}|{low}-{high}|{flag}|||F|||{when}"


def minute_after(day: int, minute: int, delta_min: int) -> tuple[int, int]:
    t = _EPOCH + timedelta(days=day - _EPOCH.toordinal(), minutes=minute + delta_min)
    return t.toordinal(), t.hour * 60 + t.minute
