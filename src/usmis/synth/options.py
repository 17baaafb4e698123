"""Knobs of the synthetic nation: volumes, noise rates and fraud rates, with defaults.

Every rate says what it is a share of; docs/nation.md repeats the table.  Defaults keep
care per person moderate (a demo nation must be quick) and noise/fraud frequent enough
that a few thousand people already show every kind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass
class NoiseRates:
    typo: float = 0.02  # per name field of a source patient record
    swapped_day_month: float = 0.01  # per source patient record (only when day <= 12)
    iin_mistyped_invalid: float = 0.01  # per source patient record carrying an IIN
    iin_mistyped_valid_other: float = 0.002  # per source patient record: someone else's IIN
    duplicate_patient: float = 0.01  # per source patient record: a second local id
    merge: float = 0.5  # share of HL7 duplicates later merged with ADT^A40
    late: float = 0.01  # per record: sent in the source's late file, out of order
    resent: float = 0.003  # per HL7 message / FHIR bundle: an exact re-send
    update: float = 0.03  # per hospital stay / EHR patient: an update (A08, new phone)
    malformed: float = 0.003  # per message / bundle / row: a broken copy, then a re-send
    marriage: float = 0.03  # per woman aged 20-34: surname change within the period
    missing_phone: float = 0.15  # per person: no phone known


@dataclass
class FraudRates:
    after_death: float = 0.10  # share of people dying in the period
    phantom_attachment_dead: float = 0.30  # share of people dying in the period
    phantom_attachment_emigrated: float = 0.30  # share of people emigrating in the period
    phantom_attachment_never_seen: float = 0.002  # share of adults resident all period
    impossible_day: float = 0.02  # share of polyclinic therapists (at least one instance)
    two_places_outpatient: float = 0.03  # share of stays of >= 3 days
    two_places_overlap: float = 0.01  # share of stays
    duplicate_billing_within: float = 0.002  # share of outpatient visit claims
    duplicate_billing_across: float = 0.01  # share of lab claims also billed by the polyclinic
    sex_age_incompatible: float = 0.001  # share of people
    excess_units: float = 0.02  # share of procedure claims
    excess_dose: float = 0.01  # share of dispensations
    no_indication: float = 0.002  # share of people
    upcoding: float = 0.15  # share of regional hospitals (at least one)
    volume_spike: float = 0.05  # share of polyclinics (at least one)
    ineligible_practitioner: float = 0.01  # share of polyclinic practitioners (at least one)


@dataclass
class SynthOptions:
    people: int = 2000
    seed: int = 1
    period_start: date = date(2024, 1, 1)
    months: int = 24
    visits_per_year: float = 3.0  # outpatient visits per person per year (age-adjusted)
    stays_per_year: float = 0.07  # hospital stays per person per year
    ed_per_year: float = 0.04  # emergency department visits (ADT^A04) per person per year
    lab_share: float = 0.35  # share of visits with a lab order
    procedure_share: float = 0.08  # share of visits with a procedure
    births_share: float = 0.04  # share of the N people born during the period
    emigration_share: float = 0.004  # share emigrating during the period
    messages_per_file: int = 100_000  # HL7 messages / bundles per feed file
    noise: NoiseRates = field(default_factory=NoiseRates)
    fraud: FraudRates = field(default_factory=FraudRates)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["period_start"] = self.period_start.isoformat()
        return d


def build_options(people: int, seed: int, **overrides: Any) -> SynthOptions:
    """Options from keyword overrides; ``noise``/``fraud`` may be dicts of rate overrides.

    Unknown names raise TypeError so a typo never silently runs with a default.
    """
    noise = overrides.pop("noise", None) or {}
    fraud = overrides.pop("fraud", None) or {}
    opts = SynthOptions(people=people, seed=seed, **overrides)
    if isinstance(noise, NoiseRates):
        opts.noise = noise
    else:
        opts.noise = NoiseRates(**noise)
    if isinstance(fraud, FraudRates):
        opts.fraud = fraud
    else:
        opts.fraud = FraudRates(**fraud)
    return opts
