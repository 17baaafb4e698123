"""Batch linking of many source records at once: block, compare, train, cluster.

Pure (no database): the input is a list of :class:`MatchRecord`, the output a cluster label
per record plus the pairs a registrar should review.  Used by ``usmis mpi relink`` (after
loading the records from the store), by ``usmis mpi evaluate`` (records read straight from
a synthetic nation) and by the benchmark.

Cost: blocking is a dictionary of key → record indices, so pairs grow with the sum of the
squared block sizes, not with N²; blocks larger than ``max_block`` (a key shared by
thousands, e.g. a very common name on a popular date) are skipped — the other rules still
cover their members.  Comparison is a Python loop over pairs with memoised string
similarities (names repeat a lot in a nation), then everything after it is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from usmis.mpi import fs
from usmis.mpi.model import (
    COMPARISONS,
    NULL,
    MatchRecord,
    blocking_keys,
    compare,
    iin_deterministic,
)

DETERMINISTIC = fs.DETERMINISTIC
MIN_TRAINING_RECORDS = 1000


def candidate_pairs(
    records: Sequence[MatchRecord], *, max_block: int = 200
) -> npt.NDArray[np.int64]:
    """Distinct (i, j) pairs, i < j, of records sharing at least one blocking key.

    Keys are hashed to 64-bit integers and grouped by sorting (numpy), not in a dict of
    strings: a million records have ~7 million keys, and the dict alone would cost GBs.
    A hash collision only adds a candidate pair (it is compared and scored like any other).
    """
    n = len(records)
    key_hash: list[int] = []
    owner: list[int] = []
    for i, r in enumerate(records):
        for k in blocking_keys(r):
            key_hash.append(hash(k))
            owner.append(i)
    if not key_hash:
        return np.zeros((0, 2), dtype=np.int64)
    h = np.asarray(key_hash, dtype=np.int64)
    o = np.asarray(owner, dtype=np.int64)
    del key_hash, owner
    order = np.lexsort((o, h))
    h, o = h[order], o[order]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, len(h)])
    chunks: list[npt.NDArray[np.int64]] = []
    for size in np.unique(sizes).tolist():
        if size < 2 or size > max_block:
            continue
        group_starts = starts[sizes == size]
        a, b = np.triu_indices(size, k=1)
        left = o[group_starts[:, None] + a[None, :]].ravel()
        right = o[group_starts[:, None] + b[None, :]].ravel()
        lo, hi = np.minimum(left, right), np.maximum(left, right)
        keep = lo != hi
        chunks.append(lo[keep] * n + hi[keep])
    if not chunks:
        return np.zeros((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(chunks))
    return np.stack([codes // n, codes % n], axis=1)


def compare_pairs(
    records: Sequence[MatchRecord], pairs: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
    """Comparison vectors of the pairs, and which pairs the IIN rule links outright."""
    k = len(COMPARISONS)
    gammas = np.empty((len(pairs), k), dtype=np.int8)
    det = np.zeros(len(pairs), dtype=np.bool_)
    for n, (i, j) in enumerate(pairs.tolist()):
        a, b = records[i], records[j]
        g = compare(a, b)
        gammas[n] = g
        if a.iin and a.iin == b.iin and iin_deterministic(a, b, g):
            det[n] = True
    return gammas, det


def random_gammas(
    records: Sequence[MatchRecord], n: int = 100_000, seed: int = 0
) -> npt.NDArray[np.int8]:
    """Comparison vectors of random pairs: the sample u is estimated from."""
    rng = np.random.default_rng(seed)
    size = len(records)
    if size < 2:
        return np.zeros((0, len(COMPARISONS)), dtype=np.int8)
    a = rng.integers(0, size, n)
    b = rng.integers(0, size, n)
    keep = a != b
    out = np.empty((int(keep.sum()), len(COMPARISONS)), dtype=np.int8)
    for row, (i, j) in enumerate(zip(a[keep].tolist(), b[keep].tolist(), strict=True)):
        out[row] = compare(records[i], records[j])
    return out


def train(
    records: Sequence[MatchRecord],
    gammas: npt.NDArray[np.int8],
    *,
    thresholds: fs.Thresholds | None = None,
    seed: int = 0,
) -> fs.FSModel:
    """u from random pairs, then m and the prior by EM over the blocked pairs' patterns."""
    u = fs.estimate_u(random_gammas(records, seed=seed).tolist())
    pats, counts = fs.patterns(gammas.tolist()) if len(gammas) else fs.patterns([])
    model = fs.em(pats, counts, u)
    # EM's prior is the share of matches among *blocked* pairs (which the blocking makes
    # large); decisions need the prior of two random records matching, as in Splink:
    # the matches are (almost) all inside the blocked pairs.
    n = len(records)
    all_pairs = n * (n - 1) / 2
    if all_pairs > 0 and len(gammas):
        model.prior = min(max(model.prior * len(gammas) / all_pairs, 1e-12), 0.5)
        model._refresh()
    if thresholds is not None:
        model.thresholds = thresholds
    return model


def pair_weights(
    model: fs.FSModel, gammas: npt.NDArray[np.int8], det: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Match weight of every pair (vectorised), deterministic pairs at +∞ in effect."""
    lw = model.level_weights()
    w = np.full(len(gammas), float(np.log2(model.prior / (1 - model.prior))))
    for k in range(len(COMPARISONS)):
        col = gammas[:, k].astype(np.int64)
        table = np.asarray(lw[k], dtype=np.float64)
        w += np.where(col != NULL, table[np.where(col == NULL, 0, col)], 0.0)
    w[det] = DETERMINISTIC
    return w


@dataclass
class Clustering:
    """Cluster label per record, and the (i, j, weight) pairs left for a registrar."""

    labels: npt.NDArray[np.int64]
    review: list[tuple[int, int, float]] = field(default_factory=list)
    refused_conflicts: int = 0


class _UnionFind:
    def __init__(self, n: int, iins: Sequence[str]) -> None:
        self.parent = list(range(n))
        # The trusted IINs in each cluster: two clusters holding different ones are two
        # people, whatever their names say (the IIN is unique per person).
        self.iins: list[frozenset[str]] = [frozenset({x}) if x else frozenset() for x in iins]

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        ia, ib = self.iins[ra], self.iins[rb]
        if ia and ib and not (ia & ib):
            return False
        self.parent[rb] = ra
        self.iins[ra] = ia | ib
        return True


def cluster(
    records: Sequence[MatchRecord],
    pairs: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    thresholds: fs.Thresholds,
) -> Clustering:
    """Strongest pairs first: link above the link threshold unless IINs conflict."""
    uf = _UnionFind(len(records), [r.trusted_iin for r in records])
    order = np.argsort(-weights, kind="stable")
    review: list[tuple[int, int, float]] = []
    refused = 0
    for n in order.tolist():
        w = float(weights[n])
        if w < thresholds.review:
            break
        i, j = int(pairs[n, 0]), int(pairs[n, 1])
        if w >= thresholds.link:
            if not uf.union(i, j):
                refused += 1
                if w < DETERMINISTIC:
                    review.append((i, j, w))
        else:
            review.append((i, j, w))
    labels = np.asarray([uf.find(i) for i in range(len(records))], dtype=np.int64)
    # A review pair whose records ended up together anyway needs no registrar.
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[int, int, float]] = []
    for i, j, w in review:
        li, lj = int(labels[i]), int(labels[j])
        if li == lj:
            continue
        key = (min(li, lj), max(li, lj))
        if key not in seen:
            seen.add(key)
            pending.append((i, j, w))
    return Clustering(labels=labels, review=pending, refused_conflicts=refused)


@dataclass
class BatchResult:
    model: fs.FSModel
    clustering: Clustering
    n_pairs: int
    n_deterministic: int


def link_batch(
    records: Sequence[MatchRecord],
    *,
    model: fs.FSModel | None = None,
    thresholds: fs.Thresholds | None = None,
    max_block: int = 200,
    seed: int = 0,
    source_merges: Sequence[tuple[str, str]] = (),
) -> BatchResult:
    """Block, compare, train (unless a model is given), score and cluster.

    ``source_merges``: pairs of record keys a source said are one person (HL7 A40); they
    are linked like deterministic pairs.
    """
    pairs = candidate_pairs(records, max_block=max_block)
    gammas, det = compare_pairs(records, pairs)
    if model is None and len(records) < MIN_TRAINING_RECORDS:
        # EM on a handful of records estimates nothing; keep the prior knowledge.
        model = fs.default_model()
    if model is None:
        model = train(records, gammas, thresholds=thresholds, seed=seed)
    elif thresholds is not None:
        model.thresholds = thresholds
    weights = pair_weights(model, gammas, det)
    if source_merges:
        index = {r.key: i for i, r in enumerate(records)}
        forced = [
            (min(index[a], index[b]), max(index[a], index[b]))
            for a, b in source_merges
            if a in index and b in index and a != b
        ]
        if forced:
            pairs = np.concatenate([pairs, np.asarray(forced, dtype=np.int64)])
            weights = np.concatenate([weights, np.full(len(forced), DETERMINISTIC)])
    clustering = cluster(records, pairs, weights, model.thresholds)
    return BatchResult(model, clustering, len(pairs), int(det.sum()))
