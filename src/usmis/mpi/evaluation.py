"""Scoring a clustering against ground truth: pairwise and cluster-level figures.

Pairwise precision/recall count *pairs of source records*: a pair is predicted when both
records are in one predicted person, true when both belong to one true person.  Pairs are
counted, never enumerated (Σ C(n, 2) over clusters and over their intersections), so this
runs on millions of records in a second.

Cluster level: a true person is *exactly recovered* when one predicted person holds all of
their records and nothing else; *split* when their records are spread over several
predicted persons; a predicted person is *merged* when it holds records of several true
people (the dangerous error: someone else's diagnoses in a record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass
class Figures:
    records: int
    true_persons: int
    predicted_persons: int
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    precision: float
    recall: float
    f1: float
    exact_persons: int
    cluster_precision: float
    cluster_recall: float
    split_persons: int
    merged_persons: int
    review_tasks: int
    review_share: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(counts: npt.NDArray[np.int64]) -> int:
    return int((counts * (counts - 1) // 2).sum())


def _dense(labels: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.astype(np.int64)


def score(
    predicted: Sequence[Any] | npt.NDArray[Any],
    truth: Sequence[Any] | npt.NDArray[Any],
    *,
    review_tasks: int = 0,
) -> Figures:
    """Figures for one predicted labelling of the records against the true labelling."""
    p = _dense(predicted)
    t = _dense(truth)
    n = len(p)
    if n == 0:
        return Figures(0, 0, 0, 0, 0, 0, 1.0, 1.0, 1.0, 0, 1.0, 1.0, 0, 0, 0, 0.0)
    p_counts = np.bincount(p)
    t_counts = np.bincount(t)
    joint = p * (int(t.max()) + 1) + t
    _, j_counts = np.unique(joint, return_counts=True)
    pred_pairs = _pairs(p_counts)
    true_pairs = _pairs(t_counts)
    correct = _pairs(j_counts.astype(np.int64))
    precision = correct / pred_pairs if pred_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Cluster level: persons per predicted cluster and clusters per true person.
    uniq_joint = np.unique(joint)
    jp = uniq_joint // (int(t.max()) + 1)
    jt = uniq_joint % (int(t.max()) + 1)
    persons_per_cluster = np.bincount(jp, minlength=len(p_counts))
    clusters_per_person = np.bincount(jt, minlength=len(t_counts))
    # Exact: the person sits in one cluster alone and that cluster holds only them.
    exact = int(((clusters_per_person[jt] == 1) & (persons_per_cluster[jp] == 1)).sum())
    return Figures(
        records=n,
        true_persons=len(t_counts),
        predicted_persons=len(p_counts),
        true_pairs=true_pairs,
        predicted_pairs=pred_pairs,
        correct_pairs=correct,
        precision=precision,
        recall=recall,
        f1=f1,
        exact_persons=exact,
        cluster_precision=exact / len(p_counts),
        cluster_recall=exact / len(t_counts),
        split_persons=int((clusters_per_person > 1).sum()),
        merged_persons=int((persons_per_cluster > 1).sum()),
        review_tasks=review_tasks,
        review_share=review_tasks / n,
    )
