"""Identities read from the vault never show their values in repr/str."""

from __future__ import annotations

from typing import Any

from fhir.conftest import make_patient
from usmis.fhir.service import FhirService
from usmis.kit.crypto import Keyring
from usmis.kit.db import unit_of_work
from usmis.vault.model import normalise_name, normalise_phone
from usmis.vault.service import identity


def test_identity_round_trip_masked(engine: Any, keys: Keyring) -> None:
    with unit_of_work(engine, write=True) as conn:
        pid = FhirService(conn, keys).create(make_patient()).resource["id"]
    with unit_of_work(engine, write=False) as conn:
        who = identity(conn, keys, None, "Patient", pid)
    assert who.iin == "900101300123"
    assert who.family == "Testova"
    assert who.phones == ("+77010000000",)
    for text in (repr(who), str(who), f"{who}"):
        assert "Testova" not in text
        assert "900101300123" not in text
        assert pid in text


def test_normalisers() -> None:
    assert normalise_phone("8 (701) 000-00-00") == normalise_phone("+7 701 000 0000")
    assert normalise_name("  ÁSEL   Nurlanqyzy ") == "asel nurlanqyzy"
