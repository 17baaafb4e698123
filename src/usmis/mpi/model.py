"""The matching model, pure: match records, comparison levels, IIN trust, blocking keys.

No database and no web here (STYLE.md): everything is a function of plain values, so it is
tested by tables and reused unchanged by the batch linker, the real-time linker and the
evaluation.  The Fellegi–Sunter weights and their EM estimation live in :mod:`usmis.mpi.fs`.

IIN policy (issue 5, and the 2013 decoupling of IIN digits from personal data): an IIN is
*never* a source of a birth date or a sex.  Its first seven digits are compared with the
record's own birth year and sex only as a **consistency signal**: a valid IIN that
contradicts them is *suspect* and is not trusted — it neither links deterministically nor
contributes IIN evidence to the probabilistic score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from usmis.mpi import names
from usmis.mpi.iin import is_valid_iin

IIN_SYSTEM = "https://usmis.kz/sid/iin"
SOURCE_PATIENT_PREFIX = "https://usmis.kz/sid/source/"

IinStatus = Literal["missing", "invalid", "suspect", "valid"]
Birth = tuple[int, int, int]


@dataclass(frozen=True, slots=True, repr=False)
class MatchRecord:
    """What the matcher knows of one source record, already normalised.

    ``repr`` shows only the opaque key: these values are personal data (STYLE.md rule 5).
    """

    key: str
    source_id: str = ""
    given: str = ""
    surname: str = ""
    surname_root: str = ""
    patronymic: str = ""
    birth: Birth | None = None
    sex: str = ""
    iin: str = ""
    iin_status: IinStatus = "missing"
    phone: str = ""
    locality: str = ""
    street: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return f"MatchRecord(key={self.key!r})"

    @property
    def trusted_iin(self) -> str:
        """The IIN if it may be relied on (valid and not contradicted), else ''."""
        return self.iin if self.iin_status == "valid" else ""

    def to_compact(self) -> list[Any]:
        """A compact list form (for the encrypted profile kept beside each link)."""
        b = list(self.birth) if self.birth else None
        return [
            self.key, self.source_id, self.given, self.surname, self.surname_root,
            self.patronymic, b, self.sex, self.iin, self.iin_status, self.phone,
            self.locality, self.street,
        ]  # fmt: skip

    @classmethod
    def from_compact(cls, v: list[Any]) -> MatchRecord:
        return cls(
            key=v[0], source_id=v[1], given=v[2], surname=v[3], surname_root=v[4],
            patronymic=v[5], birth=tuple(v[6]) if v[6] else None,
            sex=v[7], iin=v[8], iin_status=v[9], phone=v[10], locality=v[11], street=v[12],
        )  # fmt: skip


# ---------------------------------------------------------------------------- parsing

_DATE_PATTERNS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_DATE_DMY = re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4})$")
_DIGITS = re.compile(r"\D+")


def parse_birth(value: date | str | None) -> Birth | None:
    """A birth date as (year, month, day) from ISO, YYYYMMDD or DD.MM.YYYY; None if unusable.

    Impossible calendar dates are kept as written (a typo is still evidence), provided
    one of month and day is in 1..12 and the other in 1..31 (day and month swapped).
    """
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return (value.year, value.month, value.day)
    text = value.strip()
    for pat in _DATE_PATTERNS:
        m = pat.match(text)
        if m:
            y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
            break
    else:
        m = _DATE_DMY.match(text)
        if not m:
            return None
        d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    plausible = (1 <= mo <= 12 and 1 <= d <= 31) or (1 <= d <= 12 and 1 <= mo <= 31)
    if not plausible or not 1800 <= y <= 2100:  # (a swapped day and month is kept)
        return None
    return (y, mo, d)


def normalise_phone(value: str | None) -> str:
    """The national significant number: the last ten digits (+7 7xx … / 8 7xx … agree)."""
    if not value:
        return ""
    digits = _DIGITS.sub("", value)
    return digits[-10:] if len(digits) >= 10 else ""


def normalise_sex(value: str | None) -> str:
    """'M', 'F' or '' from FHIR gender codes, HL7 v2 codes and common spellings."""
    if not value:
        return ""
    v = value.strip().lower()
    if v in {"male", "m", "м", "муж", "мужской", "1", "er"}:
        return "M"
    if v in {"female", "f", "ж", "жен", "женский", "2", "w", "ayel"}:
        return "F"
    return ""


def iin_status(iin: str, birth: Birth | None, sex: str) -> IinStatus:
    """How far an IIN may be trusted for this record (a consistency signal only).

    The seventh digit (1..6) and the first two give a century, a year and a sex as they
    were assigned; when the record's own birth year or sex disagree, the IIN is suspect.
    Nothing is ever *derived* from the digits: a record without a birth date or a sex
    is not given one, it is just not checked on that part.
    """
    if not iin:
        return "missing"
    if not is_valid_iin(iin):
        return "invalid"
    marker = int(iin[6])
    if 1 <= marker <= 6:
        year = 1800 + 100 * ((marker - 1) // 2) + int(iin[:2])
        if birth is not None and birth[0] != year:
            return "suspect"
        if sex and sex != ("M" if marker % 2 else "F"):
            return "suspect"
    return "valid"


def make_record(
    key: str,
    *,
    source_id: str = "",
    given: str | None = None,
    surname: str | None = None,
    patronymic: str | None = None,
    birth_date: date | str | None = None,
    sex: str | None = None,
    iin: str | None = None,
    phone: str | None = None,
    locality: str | None = None,
    street: str | None = None,
) -> MatchRecord:
    """Normalise raw values (any script, any scheme) into a :class:`MatchRecord`."""
    birth = parse_birth(birth_date)
    sx = normalise_sex(sex)
    clean_iin = _DIGITS.sub("", iin or "")
    if iin and len(clean_iin) != 12:
        clean_iin = clean_iin or "x"  # present but unusable: invalid, never matched
    given_tokens = (given or "").split()
    first_given = given_tokens[0] if given_tokens else ""
    patr = patronymic or (" ".join(given_tokens[1:]) if len(given_tokens) > 1 else "")
    return MatchRecord(
        key=key,
        source_id=source_id,
        given=names.fold(first_given),
        surname=names.fold(surname),
        surname_root=names.surname_root(surname),
        patronymic=names.patronymic_root(patr.replace(" ", "")),
        birth=birth,
        sex=sx,
        iin=clean_iin,
        iin_status=iin_status(clean_iin, birth, sx) if clean_iin != "x" else "invalid",
        phone=normalise_phone(phone),
        locality=names.fold(locality),
        street=_fold_street(street),
    )


def _fold_street(text: str | None) -> str:
    if not text:
        return ""
    # Keep digits (house numbers) and folded words; drop street-type words in any script.
    words = re.findall(r"\w+", text.lower())
    out = []
    for w in words:
        if w.isdigit():
            out.append(w)
            continue
        f = names.fold(w)
        if f and f not in _STREET_WORDS:
            out.append(f)
    return " ".join(out)


_STREET_WORDS = frozenset(
    {"ul", "ulica", "kosh", "koshesi", "pr", "prospekt", "dangil", "d", "dom", "kv", "mkr",
     "mikroraion", "st", "street", "ave", "avenue", "pereulok", "per", "shagin", "kvartira",
     "ui", "uii", "korpus", "k"}
)  # fmt: skip


def record_from_patient(patient_id: str, resource: dict[str, Any]) -> MatchRecord:
    """A match record from a FHIR R4 Patient resource (as stored by the FHIR store).

    Names: the ``official`` HumanName if there is one, else the first; ``given[0]`` is the
    given name and the remaining ``given`` entries the patronymic (the usual Kazakh/Russian
    mapping; an explicit ``patronymic`` extension wins).  A ``text`` only name is split in
    the Surname Given Patronymic order.
    """
    source_id = ""
    iin = ""
    for ident in _dicts(resource.get("identifier")):
        system = _text(ident.get("system"))
        if system == IIN_SYSTEM and not iin:
            iin = _text(ident.get("value"))
        elif system.startswith(SOURCE_PATIENT_PREFIX) and not source_id:
            source_id = system[len(SOURCE_PATIENT_PREFIX) :].split("/")[0]
    name_list = _dicts(resource.get("name"))
    name: dict[str, Any] = next(
        (n for n in name_list if n.get("use") == "official"), name_list[0] if name_list else {}
    )
    family = _text(name.get("family"))
    given_value = name.get("given")
    givens = [_text(g) for g in given_value] if isinstance(given_value, list) else []
    givens = [g for g in givens if g]
    patronymic = ""
    for ext in _dicts(name.get("extension")):
        url = _text(ext.get("url"))
        if "patronymic" in url.lower() or url.endswith("humanname-fathers-family"):
            patronymic = _text(ext.get("valueString"))
    if not family and not givens and name.get("text"):
        family, g, p = names.split_full_name(_text(name["text"]))
        givens = [g] if g else []
        patronymic = patronymic or p
    if not patronymic and len(givens) > 1:
        patronymic = " ".join(givens[1:])
    phone = ""
    for tel in _dicts(resource.get("telecom")):
        if tel.get("system") in (None, "phone", "sms"):
            phone = _text(tel.get("value"))
            if phone:
                break
    locality = street = ""
    addresses = _dicts(resource.get("address"))
    if addresses:
        a = addresses[0]
        locality = _text(a.get("city")) or _text(a.get("district"))
        lines = a.get("line")
        street = " ".join(_text(x) for x in lines) if isinstance(lines, list) else ""
    birth = resource.get("birthDate")
    return make_record(
        patient_id,
        source_id=source_id,
        given=givens[0] if givens else "",
        surname=family,
        patronymic=patronymic,
        birth_date=birth if isinstance(birth, str) else _text(birth),
        sex=_text(resource.get("gender")),
        iin=iin,
        phone=phone,
        locality=locality,
        street=street,
    )


def _dicts(value: Any) -> list[dict[str, Any]]:
    # Malformed input (a source's, or a hostile $match caller's) must never crash matching.
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


# ---------------------------------------------------------------------------- comparisons

# Each comparison has levels 0 (disagree) .. n-1 (exact); -1 means "a value is missing".
COMPARISONS: tuple[tuple[str, int], ...] = (
    ("given", 4),
    ("surname", 4),
    ("patronymic", 3),
    ("birth", 4),
    ("sex", 2),
    ("iin", 3),
    ("phone", 2),
    ("address", 3),
)
NULL = -1


def compare_given(a: str, b: str) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 3
    jw = JaroWinkler.normalized_similarity(a, b)
    if jw >= 0.92 or names.phonetic(a) == names.phonetic(b):
        return 2
    if jw >= 0.80:
        return 1
    return 0


def compare_surname(a: MatchRecord, b: MatchRecord) -> int:
    if not a.surname_root or not b.surname_root:
        return NULL
    if a.surname_root == b.surname_root or a.surname == b.surname:
        return 3
    if DamerauLevenshtein.distance(a.surname_root, b.surname_root) <= 1:
        return 2
    if JaroWinkler.normalized_similarity(a.surname_root, b.surname_root) >= 0.88:
        return 1
    return 0


def compare_patronymic(a: str, b: str) -> int:
    if not a or not b:
        return NULL
    if a == b:
        return 2
    if JaroWinkler.normalized_similarity(a, b) >= 0.88:
        return 1
    return 0


def compare_birth(a: Birth | None, b: Birth | None) -> int:
    """3 exact; 2 day and month swapped; 1 one typed digit or transposition; 0 else."""
    if a is None or b is None:
        return NULL
    if a == b:
        return 3
    if a[0] == b[0] and a[1] == b[2] and a[2] == b[1]:
        return 2
    sa = f"{a[0]:04d}{a[1]:02d}{a[2]:02d}"
    sb = f"{b[0]:04d}{b[1]:02d}{b[2]:02d}"
    if DamerauLevenshtein.distance(sa, sb) <= 1:
        return 1
    return 0


def compare_iin(a: MatchRecord, b: MatchRecord) -> int:
    """IIN evidence only between IINs that are not suspect: 2 equal, 1 one typo, 0 else."""
    if not a.iin or not b.iin or a.iin_status == "suspect" or b.iin_status == "suspect":
        return NULL
    if a.iin == b.iin:
        return 2
    if len(a.iin) == len(b.iin) == 12 and DamerauLevenshtein.distance(a.iin, b.iin) <= 1:
        return 1
    return 0


def compare_address(a: MatchRecord, b: MatchRecord) -> int:
    if not a.locality or not b.locality:
        return NULL
    if a.locality != b.locality:
        return 0
    if a.street and a.street == b.street:
        return 2
    return 1


def compare(a: MatchRecord, b: MatchRecord) -> tuple[int, ...]:
    """The comparison vector of two records, in the order of :data:`COMPARISONS`."""
    given = compare_given(a.given, b.given)
    surname = compare_surname(a, b)
    if given == 0 and surname == 0 and a.given and a.given == b.surname_root:
        # Given name and surname written in each other's field.
        given = surname = 2
    return (
        given,
        surname,
        compare_patronymic(a.patronymic, b.patronymic),
        compare_birth(a.birth, b.birth),
        NULL if not a.sex or not b.sex else int(a.sex == b.sex),
        compare_iin(a, b),
        NULL if not a.phone or not b.phone else int(a.phone == b.phone),
        compare_address(a, b),
    )


def iin_deterministic(a: MatchRecord, b: MatchRecord, gamma: tuple[int, ...]) -> bool:
    """The deterministic rule: one trusted IIN on both, and nothing else contradicting it.

    "Contradicting" means the names or the birth date disagree outright, which is what a
    valid IIN typed into the wrong person's record looks like.
    """
    if not a.trusted_iin or a.trusted_iin != b.trusted_iin:
        return False
    given, surname, _patr, birth, sex = gamma[:5]
    names_disagree = given == 0 and surname == 0
    return not names_disagree and birth != 0 and sex != 0


# ---------------------------------------------------------------------------- blocking


def _date_key(birth: Birth | None) -> str:
    # Year + the unordered (month, day) pair: a swapped day and month share the key.
    if birth is None:
        return ""
    lo, hi = sorted((birth[1], birth[2]))
    return f"{birth[0]:04d}{lo:02d}{hi:02d}"


def blocking_keys(r: MatchRecord) -> list[str]:
    """Candidate-retrieval keys; two records are compared when they share at least one.

    Several rules, each tolerant of a different kind of noise, so that recall survives
    any single error while every block stays small (cost near-linear in the records):
    IIN (names changed), given + date (surname changed on marriage), surname + date
    (given-name typo), patronymic + date, given + surname + year (day/month typos),
    given + surname + day/month (year typos), phone.
    """
    keys: list[str] = []
    dk = _date_key(r.birth)
    if r.iin and r.iin_status in ("valid", "suspect", "invalid") and len(r.iin) == 12:
        keys.append("i:" + r.iin)
    if r.given and dk:
        keys.append(f"gd:{r.given}:{dk}")
    if r.surname_root and dk:
        keys.append(f"sd:{r.surname_root}:{dk}")
    if r.patronymic and dk:
        keys.append(f"pd:{r.patronymic}:{dk}")
    if r.given and r.surname_root and r.birth:
        gs = f"{names.phonetic(r.given)}:{names.phonetic(r.surname_root)}"
        keys.append(f"gs:{gs}:{r.birth[0]}")
        keys.append(f"gm:{gs}:{dk[4:]}")
    if r.phone:
        keys.append("p:" + r.phone)
    return keys
