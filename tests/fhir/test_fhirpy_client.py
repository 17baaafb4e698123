"""A real third-party FHIR client (fhirpy) against a real uvicorn server."""

from __future__ import annotations

from fhirpy import SyncFHIRClient

from .conftest import LiveServer, make_observation, make_patient

URN = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"


def test_fhirpy_create_read_update_search_page_transaction(live_server: LiveServer) -> None:
    client = SyncFHIRClient(f"{live_server.url}/fhir",
                            authorization=f"Bearer {live_server.token}")
    patient = client.resource("Patient", **{k: v for k, v in make_patient().items()
                                            if k != "resourceType"})
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    fetched = client.reference("Patient", patient.id).to_resource()
    assert fetched["name"][0]["family"] == "Testova"

    fetched["active"] = True
    fetched.save()
    assert client.reference("Patient", patient.id).to_resource()["meta"]["versionId"] == "2"

    for i in range(7):
        obs = make_observation(patient.id, value=60 + i)
        client.resource("Observation", **{k: v for k, v in obs.items()
                                          if k != "resourceType"}).save()
    search = client.resources("Observation").search(patient=patient.id).limit(3)
    assert search.count() == 7
    everything = search.fetch_all()  # follows the server's next links
    assert len({o.id for o in everything}) == 7
    first_page = search.fetch()
    assert len(first_page) == 3

    found = client.resources("Patient").search(
        identifier="https://usmis.kz/sid/iin|900101300123").fetch_all()
    assert [p.id for p in found] == [patient.id]

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": URN,
             "resource": make_patient(iin="880808400222", family="Other"),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {**make_observation("x"),
                          "subject": {"reference": URN}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    result = client.execute("", method="post", data=bundle)
    assert result["type"] == "transaction-response"
    new_pid = result["entry"][0]["response"]["location"].split("/")[1]
    obs = client.resources("Observation").search(subject=f"Patient/{new_pid}").fetch_all()
    assert len(obs) == 1

    client.reference("Patient", new_pid).to_resource().delete()
    assert client.resources("Patient").search(_id=new_pid).count() == 0
