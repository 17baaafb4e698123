"""The IIN check digit, as the issue states it (weights 1..11, then 3..11,1,2)."""

from __future__ import annotations

import pytest

from usmis.mpi.iin import iin_check_digit, is_valid_iin


def _reference(prefix: str) -> int | None:
    d = [int(c) for c in prefix]
    c = sum((i + 1) * x for i, x in enumerate(d)) % 11
    if c == 10:
        w = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]
        c = sum(a * b for a, b in zip(w, d, strict=True)) % 11
        if c == 10:
            return None
    return c


@pytest.mark.parametrize(
    "prefix",
    ["00000000000", "90010130001", "85123140123", "01020350777", "12345678901", "99999999999"],
)
def test_check_digit_matches_the_reference(prefix: str) -> None:
    assert iin_check_digit(prefix) == _reference(prefix)


def test_every_issued_prefix_makes_a_valid_iin_and_other_digits_fail() -> None:
    for n in range(0, 100_000, 7):
        prefix = f"9001013{n:04d}"[:11]
        check = iin_check_digit(prefix)
        if check is None:
            assert not any(is_valid_iin(prefix + str(k)) for k in range(10))
            continue
        assert is_valid_iin(prefix + str(check))
        for k in range(10):
            if k != check:
                assert not is_valid_iin(prefix + str(k))


@pytest.mark.parametrize(
    "bad", ["", "1234", "12345678901a", "1234567890123", "１２３４５６７８９０１２"]
)
def test_malformed_strings_are_invalid(bad: str) -> None:
    assert not is_valid_iin(bad)


def test_prefix_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="11 digits"):
        iin_check_digit("123")
