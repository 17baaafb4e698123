"""The fraud ledger: planted scheme instances, their items and amounts at risk.

Amounts follow the formulas of docs/nation.md exactly, so that an oversight rule
computing the same formula over the feeds reproduces them.  Most instances are
accounted centrally as claims are emitted (after_death, impossible_day,
ineligible_practitioner), so any claim that meets a scheme's definition is counted,
whichever part of the generator produced it.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from usmis.synth.writers import GroundTruthCsv

Item = tuple[str, str, str, float]  # source_id, record kind, record id, amount


@dataclass
class Accumulator:
    """A provider-level instance being accounted; its items are streamed to disk at once."""

    iid: str = ""
    amount: float = 0.0
    n_items: int = 0
    patients: set[str] = field(default_factory=set)
    minutes: int = 0


class FraudLedger:
    def __init__(self, gt: Path) -> None:
        self.fraud = GroundTruthCsv(gt / "fraud.csv", [
            "instance_id", "scheme", "variant", "provider_bin", "practitioner_id", "person_id",
            "date_from", "date_to", "amount_at_risk", "n_items", "detail"])
        self.items = GroundTruthCsv(gt / "fraud_items.csv", [
            "instance_id", "scheme", "source_id", "record_kind", "record_id", "amount"])
        self._seq = 0
        self.counts: Counter[str] = Counter()
        self.amounts: defaultdict[str, float] = defaultdict(float)
        # provider-level accounting (small: per organization and month)
        self.monthly: defaultdict[tuple[str, int], float] = defaultdict(float)
        self.inpatient: dict[str, list[float]] = {}  # bin → [n, n_exp, sum_exp]

    def reserve(self) -> str:
        """An instance id for an instance whose row is written at the end (items stream)."""
        self._seq += 1
        return f"F{self._seq:07d}"

    def item(self, acc: Accumulator, scheme: str, item: Item) -> None:
        source_id, kind, rid, amt = item
        self.items.write([acc.iid, scheme, source_id, kind, rid, f"{amt:.2f}"])
        acc.n_items += 1

    def finish(self, acc: Accumulator, scheme: str, variant: str, provider_bin: str,
               practitioner_id: str, date_from: str, date_to: str, amount: float,
               detail: str = "") -> None:
        self.fraud.write([acc.iid, scheme, variant, provider_bin, practitioner_id, "",
                          date_from, date_to, f"{amount:.2f}", acc.n_items, detail])
        self.counts[scheme] += 1
        self.amounts[scheme] += amount

    def record(self, scheme: str, variant: str, provider_bin: str, practitioner_id: str,
               person_id: str, date_from: str, date_to: str, amount: float,
               items: list[Item], detail: str = "") -> str:
        self._seq += 1
        iid = f"F{self._seq:07d}"
        self.fraud.write([iid, scheme, variant, provider_bin, practitioner_id, person_id,
                          date_from, date_to, f"{amount:.2f}", len(items), detail])
        for source_id, kind, rid, amt in items:
            self.items.write([iid, scheme, source_id, kind, rid, f"{amt:.2f}"])
        self.counts[scheme] += 1
        self.amounts[scheme] += amount
        return iid

    def inpatient_claim(self, provider_bin: str, amount: float, expensive: bool) -> None:
        acc = self.inpatient.setdefault(provider_bin, [0.0, 0.0, 0.0])
        acc[0] += 1
        if expensive:
            acc[1] += 1
            acc[2] += amount

    def upcoding_median_share(self, min_claims: int = 20) -> float:
        """Median expensive share over hospitals with at least ``min_claims`` claims."""
        shares = [n_exp / n for n, n_exp, _ in self.inpatient.values() if n >= min_claims]
        if not shares:
            shares = [n_exp / n for n, n_exp, _ in self.inpatient.values() if n]
        return statistics.median(shares) if shares else 0.0

    def close(self) -> None:
        self.fraud.close()
        self.items.close()
