"""Pairwise and cluster-level figures on hand-countable labellings."""

from __future__ import annotations

import pytest

from usmis.mpi.evaluation import score


def test_perfect_clustering() -> None:
    f = score(["a", "a", "b", "c", "c", "c"], [1, 1, 2, 3, 3, 3])
    assert (f.precision, f.recall, f.cluster_precision, f.cluster_recall) == (1, 1, 1, 1)
    assert (f.true_pairs, f.exact_persons, f.split_persons, f.merged_persons) == (4, 3, 0, 0)


def test_a_wrong_merge_costs_precision_and_a_split_costs_recall() -> None:
    # truth: {0,1} {2} {3,4,5}; predicted: {0,1,2} (merge) {3,4} {5} (split)
    f = score([1, 1, 1, 2, 2, 3], ["x", "x", "y", "z", "z", "z"], review_tasks=1)
    assert f.predicted_pairs == 4
    assert f.true_pairs == 4
    assert f.correct_pairs == 2
    assert f.precision == pytest.approx(0.5)
    assert f.recall == pytest.approx(0.5)
    assert (f.exact_persons, f.split_persons, f.merged_persons) == (0, 1, 1)
    assert f.review_share == pytest.approx(1 / 6)


def test_empty() -> None:
    assert score([], []).precision == 1.0
