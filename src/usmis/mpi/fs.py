"""Fellegi–Sunter weights, estimated from the data by expectation–maximisation.

Why our own EM and not Splink's: the same m/u model (one probability per comparison level,
conditional independence, u from random pairs, m and the match prior by EM over blocked
pairs) is a few dozen lines of numpy, and owning it lets the real-time linker score a
candidate in microseconds in-process with exactly the weights the batch linker trained —
Splink's per-record inference costs ~130 ms a record (issue 5).  Splink itself runs beside
it in ``usmis mpi evaluate`` as the reference.

EM runs over *patterns* (distinct comparison vectors with their counts), not pairs: a
national blocking run has hundreds of millions of pairs but only a few thousand patterns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from usmis.mpi.model import COMPARISONS, NULL

if TYPE_CHECKING:  # numpy (~0.15 s to import) is for training; linking never needs it
    import numpy as np
    import numpy.typing as npt

Decision = Literal["link", "review", "new"]

DETERMINISTIC = 1e9  # the weight given to a pair linked by the IIN rule

# Smoothing so no level ever has probability 0 (a weight of ±infinity).
_EPS = 1e-6


@dataclass
class Thresholds:
    """Match-weight (log2 Bayes factor incl. prior) cut-offs.

    ``link``: at or above, link automatically; ``review``: at or above (and below ``link``),
    a registrar decides; below ``review``: a new person.  Chosen so that precision stays
    ≥ 0.998 on the synthetic nation with ≤ 1 % sent to review (docs/mpi.md).
    """

    link: float = 8.0
    review: float = 0.0

    def decide(self, weight: float) -> Decision:
        if weight >= self.link:
            return "link"
        if weight >= self.review:
            return "review"
        return "new"


@dataclass
class FSModel:
    """m and u probabilities per comparison level, and the prior probability of a match."""

    m: list[list[float]]
    u: list[list[float]]
    prior: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    trained_on: int = 0

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        self._w = [
            [math.log2(max(mi, _EPS) / max(ui, _EPS)) for mi, ui in zip(mk, uk, strict=True)]
            for mk, uk in zip(self.m, self.u, strict=True)
        ]
        self._prior_w = math.log2(self.prior / (1 - self.prior))

    def level_weights(self) -> list[list[float]]:
        return [list(w) for w in self._w]

    def weight(self, gamma: Sequence[int]) -> float:
        """The match weight of one comparison vector (missing values contribute 0)."""
        total = self._prior_w
        for k, level in enumerate(gamma):
            if level != NULL:
                total += self._w[k][level]
        return total

    @staticmethod
    def probability(weight: float) -> float:
        return float(1.0 / (1.0 + 2.0 ** (-weight)))

    def to_json(self) -> str:
        return json.dumps(
            {
                "comparisons": [name for name, _ in COMPARISONS],
                "m": self.m,
                "u": self.u,
                "prior": self.prior,
                "thresholds": {"link": self.thresholds.link, "review": self.thresholds.review},
                "trained_on": self.trained_on,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FSModel:
        d: dict[str, Any] = json.loads(text)
        return cls(
            m=d["m"],
            u=d["u"],
            prior=d["prior"],
            thresholds=Thresholds(**d.get("thresholds", {})),
            trained_on=int(d.get("trained_on", 0)),
        )


def default_model() -> FSModel:
    """Reasonable weights before any training (used until `usmis mpi relink` trains one).

    Hand-set from the usual error rates of registries; EM replaces them with the data's own.
    """
    m = [
        [0.03, 0.04, 0.08, 0.85],  # given
        [0.10, 0.03, 0.05, 0.82],  # surname (marriage changes it)
        [0.03, 0.05, 0.92],  # patronymic
        [0.02, 0.02, 0.02, 0.94],  # birth
        [0.01, 0.99],  # sex
        [0.01, 0.04, 0.95],  # iin
        [0.30, 0.70],  # phone
        [0.30, 0.40, 0.30],  # address
    ]
    u = [
        [0.93, 0.05, 0.01, 0.01],
        [0.95, 0.03, 0.01, 0.01],
        [0.93, 0.05, 0.02],
        [0.995, 0.004, 0.0005, 0.0005],
        [0.5, 0.5],
        [0.9999, 0.0001, 0.00001],
        [0.9999, 0.0001],
        [0.9, 0.09, 0.01],
    ]
    return FSModel(m=m, u=u, prior=1e-4)


def patterns(gammas: Iterable[Sequence[int]]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Distinct comparison vectors and how often each occurs."""
    import numpy as np

    arr = np.asarray(list(gammas), dtype=np.int8)
    if arr.size == 0:
        return np.zeros((0, len(COMPARISONS)), dtype=np.int8), np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(arr, axis=0, return_counts=True)
    return uniq, counts.astype(np.int64)


def level_frequencies(
    pats: npt.NDArray[np.int8], weights: npt.NDArray[np.float64]
) -> list[list[float]]:
    """Weighted share of each level of each comparison, ignoring missing values."""
    out: list[list[float]] = []
    for k, (_name, n_levels) in enumerate(COMPARISONS):
        col = pats[:, k]
        present = col != NULL
        denom = float(weights[present].sum())
        row = []
        for lvl in range(n_levels):
            num = float(weights[col == lvl].sum())
            row.append((num + _EPS) / (denom + _EPS * n_levels) if denom > 0 else 1.0 / n_levels)
        out.append(row)
    return out


# Lowest u per (comparison, level) regardless of the sample: household members share a
# phone and an address, so agreement there can never be near-proof of identity; and a
# random sample of 10^5 pairs cannot measure a u below ~10^-5 anyway.
U_FLOORS: dict[tuple[str, int], float] = {
    ("phone", 1): 1e-3,
    ("address", 2): 1e-3,
    ("address", 1): 1e-2,
    ("birth", 3): 1e-5,
    ("birth", 2): 1e-6,
    ("birth", 1): 1e-5,
    ("iin", 2): 1e-7,
    ("iin", 1): 1e-6,
}
U_FLOOR_DEFAULT = 1e-5


def estimate_u(random_gammas: Iterable[Sequence[int]]) -> list[list[float]]:
    """u from comparisons of random record pairs, almost all of which are non-matches."""
    import numpy as np

    pats, counts = patterns(random_gammas)
    u = level_frequencies(pats, counts.astype(np.float64))
    for k, (name, n_levels) in enumerate(COMPARISONS):
        for lvl in range(1, n_levels):
            u[k][lvl] = max(u[k][lvl], U_FLOORS.get((name, lvl), U_FLOOR_DEFAULT))
    return u


def em(
    pats: npt.NDArray[np.int8],
    counts: npt.NDArray[np.int64],
    u: list[list[float]],
    *,
    start: FSModel | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    fix_u: bool = True,
) -> FSModel:
    """Estimate m (and the prior among the blocked pairs) by EM; u stays as sampled.

    Keeping u fixed from random pairs is Splink's approach too: on blocked pairs the
    non-matches are not a random sample, so their level frequencies would bias u.
    """
    import numpy as np

    model = start or default_model()
    m = [list(r) for r in model.m]
    uu = [list(r) for r in u]
    lam = 0.1
    w = counts.astype(np.float64)
    for _ in range(max_iter):
        log_m = np.zeros(len(pats))
        log_u = np.zeros(len(pats))
        for k in range(len(COMPARISONS)):
            col = pats[:, k]
            present = col != NULL
            lm = np.log(np.maximum(np.asarray(m[k]), _EPS))
            lu = np.log(np.maximum(np.asarray(uu[k]), _EPS))
            idx = np.where(present, col, 0)
            log_m += np.where(present, lm[idx], 0.0)
            log_u += np.where(present, lu[idx], 0.0)
        a = math.log(lam) + log_m
        b = math.log(1 - lam) + log_u
        mx = np.maximum(a, b)
        p = np.exp(a - mx) / (np.exp(a - mx) + np.exp(b - mx))
        new_m = level_frequencies(pats, w * p)
        if not fix_u:
            uu = level_frequencies(pats, w * (1 - p))
        new_lam = float((w * p).sum() / w.sum())
        new_lam = min(max(new_lam, 1e-9), 1 - 1e-9)
        delta = max(
            abs(x - y) for row_a, row_b in zip(new_m, m, strict=True)
            for x, y in zip(row_a, row_b, strict=True)
        )  # fmt: skip
        m, lam = new_m, new_lam
        if delta < tol:
            break
    # The prior stored is per *blocked pair*; the decision thresholds are set on that scale.
    return FSModel(m=m, u=uu, prior=lam, thresholds=model.thresholds, trained_on=int(w.sum()))
