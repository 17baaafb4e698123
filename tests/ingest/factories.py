"""Synthetic HL7 messages for tests (invented people; no real personal data)."""

from __future__ import annotations

from usmis.ingest.mapping.common import iin_valid


def make_iin(prefix: str = "8701013") -> str:
    """A checksum-valid IIN with the given 7-digit prefix (birth date + century/sex)."""
    for serial in range(10000):
        cand11 = f"{prefix}{serial:04d}"
        for check in range(10):
            if iin_valid(cand11 + str(check)):
                return cand11 + str(check)
    raise ValueError("no IIN for prefix")


def make_adt(
    *,
    trigger: str = "A01",
    source: str = "his-test",
    control: str = "MSG0001",
    patient: str = "P100",
    iin: str | None = None,
    family: str = "Тестов",
    given: str = "Тест",
    birth: str = "19870101",
    sex: str = "M",
    visit: str = "V100",
    patient_class: str = "I",
    event_time: str = "20240301101500",
    admit: str = "20240301100000",
    discharge: str = "",
    diagnosis: str = "I10",
    secret: str = "",
    version: str = "2.5",
    merged: str = "",
) -> str:
    ids = f"{patient}^^^{source}^MR"
    if iin:
        ids += f"~{iin}^^^KZ^NI"
    segs = [
        f"MSH|^~\\&|{source}|{source}-FAC|USMIS|KZ|{event_time}|{secret}|ADT^{trigger}^ADT_{trigger}"
        f"|{control}|P|{version}",
        f"EVN|{trigger}|{event_time}",
        f"PID|1||{ids}||{family}^{given}^Тестович||{birth}|{sex}|||ул Тестовая 1^^Алматы^^050000^KZ"
        "||+77000000000",
    ]
    if trigger == "A40":
        segs.append(f"MRG|{merged}^^^{source}^MR")
    elif trigger != "A08":
        pv1 = ["PV1", "1", patient_class, "WARD1^^^HOSP1", "", "", "", "D42^Врач^Тест"]
        pv1 += [""] * (19 - len(pv1)) + [visit] + [""] * 24 + [admit, discharge]
        segs.append("|".join(pv1))
        if diagnosis:
            segs.append(f"DG1|1||{diagnosis}^Diagnosis^I10|||A")
    return "\r".join(segs)


def make_oru(
    *,
    source: str = "lis-test",
    control: str = "LAB0001",
    patient: str = "L100",
    order: str = "ORD100",
    loinc: str = "2345-7",
    value: str = "5.4",
    unit: str = "mmol/L",
    value_type: str = "NM",
    event_time: str = "20240302090000",
    version: str = "2.5",
) -> str:
    return "\r".join([
        f"MSH|^~\\&|{source}|{source}-FAC|USMIS|KZ|{event_time}||ORU^R01^ORU_R01|{control}|P|"
        f"{version}",
        f"PID|1||{patient}^^^{source}^MR||Тестова^Анна||19900202|F",
        f"OBR|1|{order}|{order}|24323-8^Metabolic panel^LN|||{event_time}"
        + "|" * 18 + "F",
        f"OBX|1|{value_type}|{loinc}^Glucose^LN||{value}|{unit}|3.9-6.1|N|||F|||{event_time}",
        f"OBX|2|NM|2160-0^Creatinine^LN||80|umol/L|60-110|N|||F|||{event_time}",
    ])
