"""Name normalisation: Kazakh/Russian Cyrillic and the Latin spellings systems use.

Why a fold and not a transliteration: source systems spell one person's name through
different schemes (GOST, ICAO passport, the Kazakh Latin alphabets of 2017/2018/2021, ad
hoc), so comparing transliterations fails on Zhanna/Janna, Yerzhan/Erzhan/Erjan,
Khasen/Hasen/Xasen.  We transliterate everything with anyascii (which, unlike the common
Russian libraries, converts ә ғ қ ң ө ұ ү і) and then *fold* the Latin letters that the
schemes disagree on into one canonical skeleton.  The fold is lossy on purpose: it is a
comparison key, never shown to anyone.

Patronymics (-ұлы/-улы/-uly, -қызы/-кызы/-kyzy, -ович/-евич/-овна/-евна) and Russian
surname endings (-ов/-ова/-ев/-ева/-ин/-ина/-ский/-ская) are reduced to a *root*, so that
"Сәрсенбайқызы" and "Сарсенбаевна" (the same father) compare equal, and "Нурланова" and
"Nurlanov" (a sister, or a record missing the feminine ending) compare equal; sex is compared
separately.
"""

from __future__ import annotations

import re
from functools import lru_cache

import jellyfish
from anyascii import anyascii

# Ordered: longer clusters first.  Each maps spellings that schemes use for one sound.
_FOLDS: tuple[tuple[str, str], ...] = (
    ("shch", "sh"),
    ("sch", "sh"),
    ("tch", "ch"),
    ("dzh", "j"),
    ("zh", "j"),
    ("dj", "j"),
    ("kh", "h"),
    ("x", "h"),
    ("gh", "g"),
    ("q", "k"),
    ("ck", "k"),
    ("ts", "c"),
    ("tz", "c"),
    ("ye", "e"),
    ("ya", "ia"),
    ("yu", "iu"),
    ("yo", "e"),
    ("y", "i"),
    ("w", "u"),
    ("ph", "f"),
)
_FOLD_RE = re.compile("|".join(re.escape(a) for a, _ in _FOLDS))
_FOLD_MAP = dict(_FOLDS)
# Kazakh letters folded to their Russian neighbours before transliteration, so that
# Шыңғыс and Шынгыс (ң → "ng" in anyascii, н+г in Russian spelling) give one skeleton.
_KAZAKH = str.maketrans("әөүұқғңіһ", "аоуукгних")
# Letters of the Kazakh Latin alphabets (2017/2018/2021) whose anyascii form loses a sound:
# Ş → "S" would confuse Шынар with Сынар.
_KAZAKH_LATIN = str.maketrans(
    {
        "\u015f": "sh",
        "\u00e7": "ch",
        "\u011f": "g",
        "\u00f1": "n",
        "\u00e4": "a",
        "\u00f6": "o",
        "\u00fc": "u",
        "\u016b": "u",
        "\u0131": "i",
        "\u00e1": "a",
        "\u00f3": "o",
        "\u00fa": "u",
        "\u00fd": "i",
        "\u01f5": "g",
        "\u0144": "n",
        "\u015b": "sh",
        "\u0107": "ch",
    }
)  # fmt: skip  (ş ç ğ ñ ä ö ü ū ı á ó ú ý ǵ ń ś ć)
_NON_LETTER = re.compile(r"[^a-z]+")
_DOUBLE = re.compile(r"(.)\1+")

# Patronymic suffixes, folded (after `fold`): -ovich/-evich, -ovna/-evna, -ichna, -uly, -kyzy.
_PATRONYMIC_SUFFIXES: tuple[str, ...] = (
    "ovich",
    "evich",
    "ovic",
    "evic",
    "ovna",
    "evna",
    "ichna",
    "inichna",
    "ich",
    "uli",
    "ule",
    "kizi",
    "kiz",
)
# Surname endings reduced to a sex-neutral root (Russian and russified Kazakh surnames).
_SURNAME_SUFFIXES: tuple[str, ...] = (
    "skaia",
    "skii",
    "skai",
    "ckaia",
    "ckii",
    "ova",
    "eva",
    "ov",
    "ev",
    "uli",
    "kizi",
    "aia",
    "oi",
)
_VOWELS = frozenset("aeiou")


def _fold_raw(text: str | None) -> str:
    """The folded skeleton before doubled letters collapse (suffixes are cut on this form:
    Серікқызы → "serikkizi" must lose "kizi", not the collapsed "serikizi")."""
    if not text:
        return ""
    latin = anyascii(text.lower().translate(_KAZAKH).translate(_KAZAKH_LATIN)).lower()
    latin = _NON_LETTER.sub("", latin)
    if not latin:
        return ""
    latin = _FOLD_RE.sub(lambda m: _FOLD_MAP[m.group(0)], latin)
    # A word-initial "e"/"ie" (Ерлан: Erlan / Yerlan / Ierlan) is one sound.
    if latin.startswith("ie"):
        latin = latin[1:]
    return latin


@lru_cache(maxsize=200_000)
def fold(text: str | None) -> str:
    """The canonical Latin skeleton of one name token (letters only, lower case)."""
    return _DOUBLE.sub(r"\1", _fold_raw(text))


def _cut(raw: str, suffixes: tuple[str, ...], keep: int) -> str:
    for suffix in suffixes:
        if raw.endswith(suffix) and len(raw) - len(suffix) >= keep:
            return raw[: -len(suffix)]
    return raw


def _strip_trailing_i(root: str) -> str:
    # -ай/-ей (Сарсенбай) loses its й before -евич/-евна: Сарсенбаевна ↔ Сәрсенбайқызы.
    if len(root) > 3 and root.endswith("i") and root[-2] in _VOWELS:
        return root[:-1]
    return root


@lru_cache(maxsize=200_000)
def patronymic_root(text: str | None) -> str:
    """The father's name inside a patronymic, whichever form carries it."""
    root = _cut(_fold_raw(text), _PATRONYMIC_SUFFIXES, 2)
    return _strip_trailing_i(_DOUBLE.sub(r"\1", root))


@lru_cache(maxsize=200_000)
def surname_root(text: str | None) -> str:
    """A sex-neutral root of a surname: Нурланова / Nurlanov / Нұрлан → nurlan."""
    raw = _fold_raw(text)
    if raw.endswith("ina") and len(raw) > 4:  # Ильина → Ильин
        raw = raw[:-1]
    root = _cut(raw, _SURNAME_SUFFIXES, 3)
    return _strip_trailing_i(_DOUBLE.sub(r"\1", root))


@lru_cache(maxsize=200_000)
def phonetic(text: str) -> str:
    """A phonetic key of an already folded token (blocking and a comparison level)."""
    if not text:
        return ""
    try:
        return str(jellyfish.metaphone(text))
    except Exception:  # pragma: no cover - jellyfish rejects nothing we pass, but be safe
        return text[:4]


def split_full_name(text: str) -> tuple[str, str, str]:
    """Split "Surname Given Patronymic" (the Kazakh/Russian order) into its parts.

    Kazakh patronymics may be written as two words ("Сәрсенбай ұлы"); they are rejoined.
    """
    parts = [p for p in re.split(r"\s+", text.strip()) if p]
    if len(parts) >= 2 and fold(parts[-1]) in {"uli", "kizi"}:
        parts = [*parts[:-2], parts[-2] + parts[-1]]
    surname = parts[0] if parts else ""
    given = parts[1] if len(parts) > 1 else ""
    patronymic = " ".join(parts[2:]) if len(parts) > 2 else ""
    return surname, given, patronymic
