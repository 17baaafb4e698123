"""`usmis oversight evaluate NATION_DIR`: the rules scored against the planted fraud.

Ground truth (written by the synthetic nation, read only here): ``ground_truth/fraud.csv``
(one row per planted instance: scheme, provider, amount at risk ...) and
``ground_truth/fraud_items.csv`` (the source records of each instance: source id, record
kind, record id).  Extract item ids are ``source_id|record_id`` so findings and planted
items meet on the same key.

Per scheme: *recall* = planted instances with at least one item in a finding of the
scheme's rule; *precision* = the rule's findings with at least one planted item of that
scheme; *amount ratio* = the rule's total amount at risk / the planted total.  Done means
recall >= 0.95, precision >= 0.90 and |ratio - 1| <= 0.02 for every scheme.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from usmis.config import Settings
from usmis.oversight.catalogue import load_catalogue
from usmis.oversight.engine import run_catalogue
from usmis.oversight.extract.writer import read_manifest

RECALL_MIN = 0.95
PRECISION_MIN = 0.90
AMOUNT_TOLERANCE = 0.02


def item_key(source_id: str, record_id: str) -> str:
    return f"{source_id}|{record_id}"


def load_ground_truth(nation_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Planted instances by id (scheme, amount, items) and item key → instance id."""
    gt = nation_dir / "ground_truth"
    con = duckdb.connect()
    try:
        instances: dict[str, dict[str, Any]] = {}
        for iid, scheme, variant, amount in con.execute(
            "SELECT instance_id, scheme, variant, amount_at_risk::DOUBLE "
            f"FROM read_csv('{gt / 'fraud.csv'}', header=true, all_varchar=true)"
        ).fetchall():
            instances[iid] = {"scheme": scheme, "variant": variant, "amount": amount or 0.0,
                              "items": set()}
        owner: dict[str, str] = {}
        for iid, source_id, record_id in con.execute(
            "SELECT instance_id, source_id, record_id "
            f"FROM read_csv('{gt / 'fraud_items.csv'}', header=true, all_varchar=true)"
        ).fetchall():
            key = item_key(source_id, record_id)
            if iid in instances:
                instances[iid]["items"].add(key)
                owner[key] = iid
    finally:
        con.close()
    return instances, owner


def score(instances: dict[str, dict[str, Any]],
          findings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Recall, precision and amount ratio per scheme (scheme id = rule id)."""
    by_scheme: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for inst in instances.values():
        by_scheme[inst["scheme"]].append(inst)
    rows = []
    for scheme in sorted(set(by_scheme) | set(findings)):
        planted = by_scheme.get(scheme, [])
        planted_items = set().union(*(i["items"] for i in planted)) if planted else set()
        found = findings.get(scheme, [])
        found_items = set().union(*(set(f["item_ids"] or []) for f in found)) if found else set()
        detected = sum(1 for i in planted if i["items"] & found_items)
        true_findings = sum(1 for f in found if set(f["item_ids"] or []) & planted_items)
        planted_amount = sum(i["amount"] for i in planted)
        amount = sum(float(f["amount_at_risk"] or 0) for f in found)
        recall = detected / len(planted) if planted else None
        precision = true_findings / len(found) if found else None
        ratio = amount / planted_amount if planted_amount else None
        passed = (
            bool(planted)
            and recall is not None and recall >= RECALL_MIN
            and precision is not None and precision >= PRECISION_MIN
            and ratio is not None and abs(ratio - 1) <= AMOUNT_TOLERANCE
        )
        rows.append({
            "scheme": scheme, "planted": len(planted), "planted_amount": round(planted_amount, 2),
            "findings": len(found), "detected": detected, "true_findings": true_findings,
            "recall": recall, "precision": precision, "amount_at_risk": round(amount, 2),
            "amount_ratio": ratio, "passed": passed,
        })
    return {"schemes": rows, "passed": bool(rows) and all(r["passed"] for r in rows)}


EVALUATION_PATH = (
    "nation-dev extract: the nation's feeds read directly by "
    "usmis.oversight.extract.nation (no ingestion, no patient index); ground-truth person "
    "ids stand in for linked person keys (then pseudonymised with the oversight key)"
)


def evaluate_nation(nation_dir: Path, *, extract: Path | None = None,
                    settings: Settings | None = None) -> dict[str, Any]:
    from usmis.oversight.extract.nation import build_nation_extract

    settings = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="usmis-ov-eval-") as tmp:
        root = extract
        path = "given extract"
        if root is None:
            root = Path(tmp) / "extract"
            build_nation_extract(nation_dir, root, settings=settings, key=b"evaluation-only")
            path = EVALUATION_PATH
        manifest = read_manifest(root)
        if manifest is None:
            raise FileNotFoundError(f"no extract manifest in {root}")
        runs = run_catalogue(root, load_catalogue(), manifest.as_of_date)
    findings = {r.rule.id: r.findings.to_pylist() for r in runs}
    instances, _ = load_ground_truth(nation_dir)
    result = score(instances, findings)
    result["nation"] = str(nation_dir)
    result["extract_path"] = path
    result["as_of"] = manifest.as_of
    result["seconds"] = {r.rule.id: round(r.seconds, 3) for r in runs}
    return result


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if pct else f"{x:,.0f}"


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"nation: {result['nation']}  (as of {result['as_of']})",
        f"path:   {result['extract_path']}",
        f"{'scheme':<26}{'planted':>8}{'found':>7}{'recall':>8}{'precis.':>8}"
        f"{'planted KZT':>16}{'found KZT':>16}{'ratio':>7}  ok",
    ]
    for r in result["schemes"]:
        lines.append(
            f"{r['scheme']:<26}{r['planted']:>8}{r['findings']:>7}{_fmt(r['recall']):>8}"
            f"{_fmt(r['precision']):>8}{_fmt(r['planted_amount'], False):>16}"
            f"{_fmt(r['amount_at_risk'], False):>16}{_fmt(r['amount_ratio']):>7}  "
            f"{'yes' if r['passed'] else 'NO'}"
        )
    lines.append(f"all schemes pass: {'yes' if result['passed'] else 'NO'}")
    return "\n".join(lines)
