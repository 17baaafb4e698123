"""The name normaliser: tables of real-looking variants of one name that must fold together."""

from __future__ import annotations

import pytest

from usmis.mpi.names import fold, patronymic_root, split_full_name, surname_root

SAME_GIVEN = [
    ("Жанна", "Zhanna", "Janna", "ЖАННА"),
    ("Ержан", "Yerzhan", "Erzhan", "Erjan", "Ierzhan"),
    ("Шыңғыс", "Шынгыс", "Shyngys", "Shynghys", "Shingis"),
    ("Хасен", "Khasen", "Hasen", "Xasen"),
    ("Әлия", "Алия", "Aliya", "Alia", "Äliya"),
    ("Қайрат", "Кайрат", "Qairat", "Kairat", "Qayrat"),
    ("Айгүл", "Айгуль", "Aigul", "Aygul", "Aigül"),
    ("Ілияс", "Ильяс", "Ilyas", "Ilias", "Iliyas"),
    ("Ғалым", "Галым", "Ghalym", "Galym", "Ğalym"),
    ("Өмірзақ", "Омирзак", "Omirzak", "Ömirzaq"),
    ("Ұлан", "Улан", "Ulan"),
    ("Юлия", "Yuliya", "Iuliia"),
    ("Сейітқали", "Сеиткали", "Seitkali", "Seyitqali"),
    ("Шынар", "Şynar", "Shynar", "SHYNAR"),
    ("Әсел", "Асель", "Äsel", "Asel"),
    ("Ұлжан", "Улжан", "Ūljan", "Ulzhan"),
    ("Артём", "Артем", "Artyom", "Artem"),
]


@pytest.mark.parametrize("variants", SAME_GIVEN, ids=lambda v: fold(v[0]))
def test_spellings_of_one_given_name_fold_together(variants: tuple[str, ...]) -> None:
    assert len({fold(v) for v in variants}) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [("Жанна", "Яна"), ("Ержан", "Ерлан"), ("Айгүл", "Айгерим"), ("Нурлан", "Нуржан")],
)
def test_different_names_stay_different(a: str, b: str) -> None:
    assert fold(a) != fold(b)


SAME_PATRONYMIC = [
    ("Сәрсенбайқызы", "Сарсенбаевна", "Sarsenbayevna", "Sarsenbaiqyzy", "Сәрсенбай қызы"),
    ("Нұрланұлы", "Нурланович", "Nurlanuly", "Nurlanovich", "Nurlan uly"),
    ("Ерланқызы", "Ерлановна", "Erlankyzy", "Yerlanovna"),
    ("Серікұлы", "Серикович", "Serikuly", "Serikovich"),
    ("Серікқызы", "Сериккызы", "Serikovna", "Serikqyzy"),
    ("Сергейұлы", "Сергеевич", "Sergeyevich", "Sergeevich"),
]


@pytest.mark.parametrize("variants", SAME_PATRONYMIC, ids=lambda v: patronymic_root(v[0]))
def test_patronymic_forms_reduce_to_the_fathers_name(variants: tuple[str, ...]) -> None:
    assert len({patronymic_root(v.replace(" ", "")) for v in variants}) == 1


SAME_SURNAME = [
    ("Нұрланова", "Нурланова", "Nurlanova", "Nurlanov", "Нурланов", "Нұрлан"),
    ("Жақсыбекова", "Жаксыбеков", "Zhaksybekova", "Jaqsybekov"),
    ("Сергеев", "Сергеева", "Sergeyev", "Sergeeva"),
    ("Ильин", "Ильина", "Ilin", "Ilina"),
    ("Сәрсенбай", "Сарсенбаев", "Sarsenbayev"),
    ("Кемелұлы", "Кемел"),
    ("Ковальский", "Ковальская", "Kovalskii", "Kovalskaya"),
    ("Толстой", "Толстая", "Tolstoy", "Tolstaia"),
]


@pytest.mark.parametrize("variants", SAME_SURNAME, ids=lambda v: surname_root(v[0]))
def test_surname_forms_reduce_to_one_root(variants: tuple[str, ...]) -> None:
    assert len({surname_root(v) for v in variants}) == 1


def test_fold_ignores_punctuation_and_empty() -> None:
    assert fold("Ахмет-Али") == fold("Ахметали")
    assert fold("") == ""
    assert fold(None) == ""
    assert fold("123") == ""


def test_split_full_name_in_kazakh_order() -> None:
    assert split_full_name("Нұрланова Жанна Сәрсенбай қызы") == (
        "Нұрланова",
        "Жанна",
        "Сәрсенбайқызы",
    )
    assert split_full_name("Ivanov Ivan") == ("Ivanov", "Ivan", "")
