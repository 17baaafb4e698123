"""How one source system sees a person: its local id, spelling of names, IIN and errors.

A view is made when a person first appears in a source and is kept only while that
person is being generated.  Its noise labels go to ``ground_truth/source_records.csv``.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import date

from usmis.mpi.iin import is_valid_iin
from usmis.synth.names import russify, transliterate, typo
from usmis.synth.options import NoiseRates
from usmis.synth.sources import Source
from usmis.synth.world import Person


@dataclass(slots=True)
class View:
    source: str
    local_id: str
    surname: str
    given: str
    patronymic: str
    birth: int  # ordinal, possibly with day and month swapped
    sex: str  # "M" / "F"
    iin: str
    iin_status: str
    iin_owner: str
    name_noise: list[str] = field(default_factory=list)
    dup_id: str = ""  # a second local id of the same person in this source
    surname_day: int = 0  # the day whose surname the view carries
    married_update_sent: bool = False
    address: str = ""
    city: str = ""
    region: str = ""
    phone: str = ""
    updates: list[str] = field(default_factory=list)
    used: bool = False  # the first record always carries the main local id


def _script(s: str, source: Source) -> str:
    if not s:
        return s
    return _spell(s, source.script, source.upper)


@functools.lru_cache(maxsize=1 << 17)
def _spell(s: str, script: str, upper: bool) -> str:
    if script == "cyrillic_ru":
        s = russify(s)
    elif script.startswith("latin:"):
        s = transliterate(s, script.split(":", 1)[1])
    return s.upper() if upper else s


def mistype_invalid(iin: str, rng: random.Random) -> str:
    """The IIN with one digit changed or two swapped so that the checksum fails."""
    for _ in range(50):
        i = int(rng.random() * 12)
        if rng.random() < 0.5 and i < 11 and iin[i] != iin[i + 1]:
            cand = iin[:i] + iin[i + 1] + iin[i] + iin[i + 2:]
        else:
            d = (int(iin[i]) + (1 + int(rng.random() * 9))) % 10
            cand = iin[:i] + str(d) + iin[i + 1:]
        if not is_valid_iin(cand):
            return cand
    return iin[:11] + ("0" if iin[11] != "0" else "1")  # pragma: no cover - unreachable


def make_view(
    person: Person, source: Source, local_id: str, day: int, rng: random.Random,
    noise: NoiseRates, other_iin: tuple[str, str] | None,
) -> View:
    """The record ``source`` keeps of ``person``, first created on ``day``."""
    labels: list[str] = []
    surname = person.surname_on(day)
    given, patronymic = person.given, person.patronymic
    registry = source.kind == "registry"
    if not registry or source.id != "reg_population":
        if rng.random() < noise.typo:
            surname = typo(surname, rng)
            labels.append("typo_surname")
        if rng.random() < noise.typo:
            given = typo(given, rng)
            labels.append("typo_given")
        if patronymic and rng.random() < noise.typo:
            patronymic = typo(patronymic, rng)
            labels.append("typo_patronymic")
    birth = person.birth
    b = date.fromordinal(birth)
    if not registry and b.day <= 12 and b.day != b.month and rng.random() < noise.swapped_day_month:
        birth = date(b.year, b.day, b.month).toordinal()
        labels.append("swapped_day_month")
    iin, status, owner = person.iin, "correct", ""
    if not registry or source.id in ("reg_deaths",):
        r = rng.random()
        if r < source.iin_missing:
            iin, status = "", "missing"
        elif r < source.iin_missing + noise.iin_mistyped_invalid:
            iin, status = mistype_invalid(person.iin, rng), "mistyped_invalid"
        elif other_iin is not None and r < (source.iin_missing + noise.iin_mistyped_invalid
                                            + noise.iin_mistyped_valid_other):
            iin, status, owner = other_iin[0], "mistyped_valid_other", other_iin[1]
    if person.married_on is not None and day >= person.married_on:
        labels.append("married_surname")
    return View(
        source=source.id, local_id=local_id, surname=_script(surname, source),
        given=_script(given, source), patronymic=_script(patronymic, source), birth=birth,
        sex=person.sex, iin=iin, iin_status=status, iin_owner=owner, name_noise=labels,
        surname_day=day,
    )


def respell(view: View, person: Person, source: Source, day: int) -> None:
    """Bring the view's surname up to date after a marriage (an update the source sends)."""
    view.surname = _script(person.surname_on(day), source)
    view.surname_day = day
    view.married_update_sent = True


def script_of(s: str, source: Source) -> str:
    return _script(s, source)
