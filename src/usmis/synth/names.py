"""Kazakh and Russian names, patronymics, Latin transliterations and typos.

Given names are curated (they need correct patronymic forms); surnames come from mimesis'
``kk`` and ``ru`` locales (male forms; the female form is derived as the language does).
Transliteration schemes mirror what Kazakh systems really do: the passport (ICAO 9303)
scheme, a GOST-like one that writes initial Е as "Ye", a colloquial one (Ж → J) and the
2021 Kazakh Latin alphabet.  Systems whose encoding cannot hold Kazakh letters (cp1251)
write the Russian look-alikes (Қ → К, Ұ → У …).
"""

from __future__ import annotations

import random

from mimesis import Address, Person
from mimesis.enums import Gender
from mimesis.locales import Locale

KZ_MALE = (
    "Ержан", "Нұрлан", "Асхат", "Бауыржан", "Дәурен", "Ерлан", "Қайрат", "Марат", "Серік",
    "Талғат", "Ұлан", "Айдар", "Арман", "Бекзат", "Данияр", "Ербол", "Жандос", "Жасұлан",
    "Қанат", "Мұрат", "Нұрсұлтан", "Олжас", "Руслан", "Самат", "Темірлан", "Әділет", "Ғалым",
    "Алмас", "Амир", "Ислам", "Әлихан", "Еркебұлан", "Бақыт", "Жанат", "Медет", "Ақжол",
    "Абай", "Ерасыл", "Диас", "Азамат", "Нұрболат", "Санжар", "Шыңғыс", "Елдос", "Мирас",
)
KZ_FEMALE = (
    "Жанна", "Айгүл", "Гүлнар", "Динара", "Әсел", "Айжан", "Мәдина", "Салтанат", "Жұлдыз",
    "Ақмарал", "Айгерім", "Ботагөз", "Гүлжан", "Дана", "Жансая", "Индира", "Камила", "Ләззат",
    "Мөлдір", "Назерке", "Перизат", "Сәуле", "Томирис", "Ұлжан", "Шынар", "Аружан", "Балжан",
    "Еркежан", "Зарина", "Күнсұлу", "Мақпал", "Нұргүл", "Райхан", "Толқын", "Әйгерім", "Аяулым",
)
# (name, patronymic of a son, patronymic of a daughter)
RU_MALE = (
    ("Александр", "Александрович", "Александровна"), ("Сергей", "Сергеевич", "Сергеевна"),
    ("Андрей", "Андреевич", "Андреевна"), ("Дмитрий", "Дмитриевич", "Дмитриевна"),
    ("Алексей", "Алексеевич", "Алексеевна"), ("Владимир", "Владимирович", "Владимировна"),
    ("Николай", "Николаевич", "Николаевна"), ("Иван", "Иванович", "Ивановна"),
    ("Михаил", "Михайлович", "Михайловна"), ("Евгений", "Евгеньевич", "Евгеньевна"),
    ("Виктор", "Викторович", "Викторовна"), ("Юрий", "Юрьевич", "Юрьевна"),
    ("Игорь", "Игоревич", "Игоревна"), ("Олег", "Олегович", "Олеговна"),
    ("Павел", "Павлович", "Павловна"), ("Илья", "Ильич", "Ильинична"),
    ("Никита", "Никитич", "Никитична"), ("Вадим", "Вадимович", "Вадимовна"),
    ("Константин", "Константинович", "Константиновна"), ("Егор", "Егорович", "Егоровна"),
    ("Артём", "Артёмович", "Артёмовна"), ("Максим", "Максимович", "Максимовна"),
    ("Денис", "Денисович", "Денисовна"), ("Роман", "Романович", "Романовна"),
    ("Геннадий", "Геннадьевич", "Геннадьевна"), ("Валерий", "Валерьевич", "Валерьевна"),
)
RU_FEMALE = (
    "Елена", "Ольга", "Наталья", "Татьяна", "Ирина", "Светлана", "Анна", "Мария", "Юлия",
    "Екатерина", "Людмила", "Галина", "Марина", "Оксана", "Анастасия", "Дарья", "Виктория",
    "Ксения", "Валентина", "Лариса", "Жанна", "Алёна", "Полина", "Вера",
)
KZ_SURNAMES_BARE = (
    "Сейтқали", "Нұрмұхамбет", "Әбдіхалық", "Тоқтар", "Ерғали", "Жұмабай", "Сәрсенбай",
    "Бекмұхамед", "Құдайберген", "Мырзахмет", "Әміржан", "Серікбай",
)


def kz_patronymic(father: str, sex: str, style: str) -> str:
    """The patronymic a Kazakh child of ``father`` carries, in one of the usual styles.

    ``style``: "kz" (Ержанұлы / Ержанқызы), "kz_ru" (Ержанулы / Ержанкызы, as systems
    without Kazakh letters write it) or "ru" (Ержанович / Ержановна).
    """
    if style == "kz":
        return father + ("ұлы" if sex == "M" else "қызы")
    if style == "kz_ru":
        return russify(father) + ("улы" if sex == "M" else "кызы")
    base = russify(father)
    if base[-1] in "ий":
        stem = base[:-1] + "е"
        return stem + ("вич" if sex == "M" else "вна")
    if base[-1] in "аеёиоуыэюя":
        return base + ("евич" if sex == "M" else "евна")
    return base + ("ович" if sex == "M" else "овна")


def female_surname(male: str) -> str:
    """The feminine form of a surname, as Russian and Kazakh surnames form it."""
    if male.endswith("ұлы"):
        return male[:-3] + "қызы"
    if male.endswith(("ов", "ев", "ёв", "ин", "ын")):
        return male + "а"
    if male.endswith("ский"):
        return male[:-2] + "ая"
    if male.endswith(("ий", "ой")):
        return male[:-2] + "ая"
    return male


_RUSSIFY = str.maketrans({
    "Ә": "А", "ә": "а", "Ғ": "Г", "ғ": "г", "Қ": "К", "қ": "к", "Ң": "Н", "ң": "н",
    "Ө": "О", "ө": "о", "Ұ": "У", "ұ": "у", "Ү": "У", "ү": "у", "Һ": "Х", "һ": "х",
    "І": "И", "і": "и",
})


def russify(s: str) -> str:
    """Kazakh letters replaced by their Russian look-alikes (what cp1251 systems store)."""
    return s.translate(_RUSSIFY)


_COMMON = {
    "А": "A", "Ә": "A", "Б": "B", "В": "V", "Г": "G", "Ғ": "G", "Д": "D", "Е": "E", "Ё": "E",
    "Ж": "ZH", "З": "Z", "И": "I", "Й": "I", "К": "K", "Қ": "K", "Л": "L", "М": "M", "Н": "N",
    "Ң": "N", "О": "O", "Ө": "O", "П": "P", "Р": "R", "С": "S", "Т": "T", "У": "U", "Ұ": "U",
    "Ү": "U", "Ф": "F", "Х": "KH", "Һ": "H", "Ц": "TS", "Ч": "CH", "Ш": "SH", "Щ": "SHCH",
    "Ъ": "", "Ы": "Y", "І": "I", "Ь": "", "Э": "E", "Ю": "IU", "Я": "IA",
}
SCHEMES: dict[str, dict[str, str]] = {
    # ICAO 9303, as in Kazakh passports: Ержан → ERZHAN, Жанна → ZHANNA
    "icao": dict(_COMMON),
    # GOST-like, initial Е written Ye: Ержан → YERZHAN
    "gost": {**_COMMON, "Й": "Y", "Ю": "YU", "Я": "YA", "Ё": "YO"},
    # colloquial: Ержан → ERJAN, Жанна → JANNA
    "simple": {**_COMMON, "Ж": "J", "Х": "H", "Й": "Y", "Ю": "YU", "Я": "YA", "Ц": "C"},
    # Kazakh Latin alphabet (2021): Қайрат → QAIRAT, Әсел → ÄSEL
    "kz2021": {**_COMMON, "Ә": "Ä", "Ғ": "Ğ", "Қ": "Q", "Ң": "Ñ", "Ө": "Ö", "Ұ": "Ū", "Ү": "Ü",
               "Ш": "Ş", "Ж": "J", "Й": "İ", "Х": "H", "Ч": "Ç", "І": "I", "Ы": "Y"},
}
_VOWELS = set("АӘЕЁИОӨУҰҮЫІЭЮЯ")


def transliterate(s: str, scheme: str) -> str:
    """``s`` in Latin letters by the named scheme, in title case per word."""
    table = SCHEMES[scheme]
    out: list[str] = []
    prev = ""
    for ch in s.upper():
        if ch == "Е" and scheme == "gost" and (prev == "" or prev in _VOWELS or not prev.isalpha()):
            out.append("YE")
        else:
            out.append(table.get(ch, ch))
        prev = ch
    return "".join(out).title()


def typo(s: str, rng: random.Random) -> str:
    """One keyboard-style error: a letter dropped, doubled, swapped or replaced."""
    if len(s) < 3:
        return s + s[-1:]
    i = 1 + int(rng.random() * (len(s) - 2))
    op = int(rng.random() * 4)
    if op == 0:
        return s[:i] + s[i + 1:]
    if op == 1:
        return s[:i] + s[i] + s[i:]
    if op == 2:
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    pool = [c for c in s if c.isalpha() and c != s[i]] or ["а"]
    return s[:i] + rng.choice(pool).lower() + s[i + 1:]


class NamePools:
    """Surnames and streets drawn once from mimesis (deterministic for a seed)."""

    def __init__(self, seed: int) -> None:
        kk = Person(Locale.KK, seed=seed)
        ru = Person(Locale.RU, seed=seed + 1)
        kk_s = {kk.surname(gender=Gender.MALE) for _ in range(600)}
        ru_s = {ru.surname(gender=Gender.MALE) for _ in range(600)}
        # no surnames of well-known public figures in synthetic people
        famous = {"Путин", "Назарбаев", "Токаев", "Ленин", "Сталин", "Горбачев", "Ельцин",
                  "Медведев", "Қонаев", "Кунаев", "Абай"}
        kk_s -= famous
        ru_s -= famous
        self.kz_surnames: list[str] = sorted(kk_s) + list(KZ_SURNAMES_BARE)
        # Russian male surnames that have a regular feminine form only
        self.ru_surnames: list[str] = sorted(
            s for s in ru_s if s.endswith(("ов", "ев", "ин", "ский"))
        )
        addr = Address(Locale.KK, seed=seed + 2)
        self.streets: list[str] = sorted(
            {addr.street_name() for _ in range(400)} - {""}
        )
