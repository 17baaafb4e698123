"""A small nation with raised fraud rates, generated once for the synth tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from usmis.synth import SynthSummary, generate

from .feeds import Nation

FRAUD = {
    "after_death": 0.5, "phantom_attachment_dead": 0.5, "phantom_attachment_emigrated": 0.5,
    "phantom_attachment_never_seen": 0.01, "impossible_day": 0.05,
    "two_places_outpatient": 0.2, "two_places_overlap": 0.05,
    "duplicate_billing_within": 0.01, "duplicate_billing_across": 0.03,
    "sex_age_incompatible": 0.01, "excess_units": 0.1, "excess_dose": 0.05,
    "no_indication": 0.01, "upcoding": 0.2, "volume_spike": 0.1,
    "ineligible_practitioner": 0.03,
}
PEOPLE = 2500
NOISE = {"duplicate_patient": 0.04}


@pytest.fixture(scope="session")
def nation_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Nation, SynthSummary]:
    out = tmp_path_factory.mktemp("nation") / "n"
    # A small messages_per_file makes message feeds roll over to several files, and proves
    # that extracts (one file per source) never lose rows when they do.
    summary = generate(out, PEOPLE, 7, fraud=FRAUD, noise=NOISE, emigration_share=0.02,
                       messages_per_file=400)
    return Nation(Path(out)), summary


@pytest.fixture(scope="session")
def nation(nation_run: tuple[Nation, SynthSummary]) -> Nation:
    return nation_run[0]
