from __future__ import annotations

from .conftest import Store


def test_patient_identifier_and_observation(store: Store) -> None:
    p = store.add(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "https://usmis.kz/sid/iin", "value": "900101300123"}],
            "name": [{"family": "Testova", "given": ["Aigul"]}],
            "gender": "female",
            "birthDate": "1990-01-01",
        }
    )
    store.add({"resourceType": "Patient", "gender": "male"})
    o = store.add(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
            "subject": {"reference": f"Patient/{p}"},
        }
    )
    assert store.ids("Patient", "identifier=https://usmis.kz/sid/iin|900101300123") == {p}
    assert store.ids("Patient", "identifier=900101300123") == {p}
    assert store.ids("Observation", f"patient={p}&code=http://loinc.org|1234-5") == {o}
    assert store.ids("Patient", "name=testova") == {p}
    assert store.ids("Patient", "birthdate=1990") == {p}
    r = store.search("Patient", "_count=1")
    assert r.total == 2
    assert len(r.ids) == 1
    assert r.next_link
