"""The Kazakh IIN (individual identification number) check digit.

An IIN has 12 digits: ``YYMMDD`` (birth date), one century/sex digit (1/2: 1800s,
3/4: 1900s, 5/6: 2000s; odd = male, even = female), a 4-digit serial and a check digit.

Check digit algorithm (d1..d11 are the first eleven digits):

1. ``c = (1*d1 + 2*d2 + ... + 11*d11) mod 11``;
2. if ``c == 10``, recompute with the weights ``3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2``:
   ``c = (3*d1 + 4*d2 + ... + 11*d9 + 1*d10 + 2*d11) mod 11``;
3. if that is 10 again, the prefix is never issued (no valid IIN starts with it).

The validator checks only the shape and the check digit.  It deliberately does NOT
derive or check the birth date or sex encoded in the first seven digits: real IINs exist
whose embedded date or sex disagree with the person's registered ones (corrections,
foreign-born residents), so a record must never be rejected or matched on that basis.
"""

from __future__ import annotations

_W1 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
_W2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)


def iin_check_digit(prefix11: str) -> int | None:
    """The check digit for an 11-digit prefix, or None when the prefix is never issued.

    Raises ValueError when ``prefix11`` is not exactly eleven ASCII digits.
    """
    if len(prefix11) != 11 or not prefix11.isascii() or not prefix11.isdigit():
        raise ValueError("IIN prefix must be 11 digits")
    digits = [ord(ch) - 48 for ch in prefix11]
    c = sum(w * d for w, d in zip(_W1, digits, strict=True)) % 11
    if c == 10:
        c = sum(w * d for w, d in zip(_W2, digits, strict=True)) % 11
        if c == 10:
            return None
    return c


def is_valid_iin(s: str) -> bool:
    """True when ``s`` is 12 ASCII digits whose last digit is the check digit of the rest."""
    if len(s) != 12 or not s.isascii() or not s.isdigit():
        return False
    check = iin_check_digit(s[:11])
    return check is not None and check == ord(s[11]) - 48
