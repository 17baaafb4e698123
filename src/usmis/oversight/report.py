"""The oversight report: one self-contained HTML page (inline SVG charts) or a CSV.

Why hand-drawn SVG: the page must open anywhere (air-gapped ministry desktops), with no
script, font or chart library fetched from the network.
"""

from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

from sqlalchemy import Connection

from usmis.oversight import repository as repo
from usmis.oversight.catalogue import load_catalogue

TOP_FINDINGS = 50
TOP_PROVIDERS = 15


def gather(conn: Connection) -> dict[str, Any]:
    run = repo.latest_run(conn)
    run_id = None if run is None else int(run["id"])
    titles = {r.id: r.title for r in load_catalogue()}
    return {
        "run": run,
        "titles": titles,
        "by_rule": repo.totals_by(conn, run_id, "rule_id"),
        "by_region": repo.totals_by(conn, run_id, "region"),
        "by_provider": repo.totals_by(conn, run_id, "provider_id")[:TOP_PROVIDERS],
        "top": repo.list_findings(conn, run_id=run_id, limit=TOP_FINDINGS),
        "all": repo.list_findings(conn, run_id=run_id, limit=10_000_000),
    }


def _money(x: float | None) -> str:
    return f"{(x or 0):,.0f} ₸".replace(",", " ")


def bar_chart(rows: list[tuple[str, float]], title: str, width: int = 760) -> str:
    """A horizontal bar chart as an inline SVG element."""
    bar_h, gap, label_w, value_w = 22, 6, 230, 140
    height = 30 + len(rows) * (bar_h + gap)
    peak = max((v for _, v in rows), default=0) or 1
    span = width - label_w - value_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<title>{html.escape(title)}</title>',
        f'<text x="0" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(rows):
        y = 28 + i * (bar_h + gap)
        w = max(1.0, span * value / peak)
        parts += [
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{html.escape(label[:34])}</text>",
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#b03a2e">'
            f"<title>{html.escape(label)}: {_money(value)}</title></rect>",
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{_money(value)}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any]) -> str:
    run = data["run"]
    titles = data["titles"]
    if run is None:
        summary = "<p>No oversight run yet: run <code>usmis oversight run</code>.</p>"
    else:
        summary = (
            f"<p>Run {run['id']} over the extract as of {run['as_of']} "
            f"(built by <code>{html.escape(run['builder'])}</code>): "
            f"<b>{run['findings']}</b> findings, "
            f"<b>{_money(run['amount_at_risk'])}</b> at risk.</p>"
        )
    by_rule = [(titles.get(r["key"], r["key"]), r["amount_at_risk"]) for r in data["by_rule"]]
    by_region = [(r["key"] or "unknown", r["amount_at_risk"]) for r in data["by_region"]]
    by_provider = [(r["key"] or "unknown", r["amount_at_risk"]) for r in data["by_provider"]]
    top_rows = [
        [i + 1, f["id"], f["rule_id"], f["provider_id"] or "", f["practitioner_id"] or "",
         (f["person_pseudonym"] or "")[:12], f["region"] or "", f["period_start"] or "",
         f["detail"] or "", _money(f["amount_at_risk"]), f"{f['likelihood']:.2f}",
         _money(f["expected_recovery"])]
        for i, f in enumerate(data["top"])
    ]
    rules_rows = [
        [r["key"], titles.get(r["key"], ""), r["findings"], _money(r["amount_at_risk"]),
         _money(r["expected_recovery"])]
        for r in data["by_rule"]
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>USMIS budget oversight report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
section {{ margin-bottom: 2em; }}
</style></head><body>
<h1>Budget oversight: money at risk</h1>
{summary}
<p>Findings are ranked by expected recovery = likelihood × amount at risk. People appear
only under pseudonyms; re-identification is a separate, audited action.</p>
<section>{bar_chart(by_rule, "Money at risk by rule")}</section>
<section>{bar_chart(by_region, "Money at risk by region")}</section>
<section>{bar_chart(by_provider, "Top providers by money at risk")}</section>
<section><h2>Rules</h2>{_table(["rule", "title", "findings", "at risk", "expected recovery"],
                                rules_rows)}</section>
<section><h2>Top {len(top_rows)} findings</h2>
{_table(["#", "finding", "rule", "provider", "practitioner", "person", "region", "from",
         "detail", "at risk", "likelihood", "expected recovery"], top_rows)}</section>
</body></html>
"""


CSV_COLUMNS = [
    "rank", "finding_id", "rule_id", "rule_version", "provider_id", "practitioner_id",
    "person_pseudonym", "region", "period_start", "period_end", "detail", "amount_at_risk",
    "likelihood", "expected_recovery", "score", "item_ids",
]


def render_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for i, f in enumerate(data["all"]):
        w.writerow([
            i + 1, f["id"], f["rule_id"], f["rule_version"], f["provider_id"],
            f["practitioner_id"], f["person_pseudonym"], f["region"], f["period_start"],
            f["period_end"], f["detail"], f"{f['amount_at_risk']:.2f}",
            f"{f['likelihood']:.4f}", f"{f['expected_recovery']:.2f}", f["score"],
            json.dumps(f["item_ids"]),
        ])
    return out.getvalue()
