"""Factories for match records and IINs (synthetic values only, never real people)."""

from __future__ import annotations

from datetime import date

from usmis.mpi.iin import iin_check_digit


def make_iin(birth: date, sex: str, serial: int = 1) -> str:
    """A valid IIN whose first seven digits agree with ``birth`` and ``sex``."""
    century = (birth.year // 100) - 18  # 1800s → 0, 1900s → 1, 2000s → 2
    marker = 1 + 2 * century + (0 if sex == "M" else 1)
    while True:
        prefix = f"{birth:%y%m%d}{marker}{serial:04d}"
        check = iin_check_digit(prefix)
        if check is not None:
            return prefix + str(check)
        serial += 1


def never_issued_prefix() -> str:
    """An 11-digit prefix for which both weightings give 10 (no IIN starts with it)."""
    for serial in range(10_000):
        prefix = f"8501013{serial:04d}"
        if iin_check_digit(prefix) is None:
            return prefix
    raise AssertionError("no never-issued prefix found")
