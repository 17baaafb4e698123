"""Evaluation on the REAL path: synthetic nation → ingest → patient index → store extract →
rule catalogue → scored against the planted fraud (issue 7, "done means").

Workload: ``usmis synth --people N --seed S`` with the rare per-person schemes raised so every
scheme is planted often enough to measure (``FRAUD`` below; ``--set fraud.x=r`` overrides),
then the same stages the commands run:

    usmis ingest NATION          every source through its own channel (MLLP, REST, files);
                                 the patient index links each record as it is stored
    usmis oversight extract      pseudonymised Parquet extract read from the FHIR store
    usmis oversight run          the catalogue on DuckDB, findings persisted
    usmis oversight evaluate NATION --extract DIR   per-scheme recall / precision / amount

The statistical schemes set the size: upcoding needs at least 3 hospitals with >= 20
case-group stays (its peer group) and volume_spike months of history against polyclinic
peers whose months do not swing too much; on the development path both are found on every
seed tried from 1 500 people (below 1 000 upcoding has no peer group).  Default 2 000 people.

Prints the workload, the machine (cores, RAM, load average before and after), stage times,
the patient index's pairwise link quality, and per scheme: planted, found, recall, precision,
amount planted vs found, against the floors (recall >= 0.95, precision >= 0.90, amount
within 2 %), next to the development path (feeds read directly, ground-truth person ids) so
a gap shows whether it comes from ingestion/linking or from the rules.  Embedded default
(SQLite file in --dir); ``--reuse`` skips synth and ingest when --dir already holds them.

    .venv/bin/python bench/bench_oversight_realpath.py [--people 2000] [--seed 1]
        [--dir /tmp/ov-realpath] [--reuse] [--set fraud.after_death=0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from usmis.config import Settings
from usmis.oversight.evaluation import AMOUNT_TOLERANCE, PRECISION_MIN, RECALL_MIN

# Rare per-person schemes raised (as the demo does) plus never-seen attachments and
# overlapping stays, so that each has >= ~10 instances at 2 000 people.  The per-provider
# schemes (impossible_day, ineligible_practitioner, upcoding, volume_spike) keep their
# defaults: about one instance each at this size, as in a real nation of this size.
FRAUD = {"after_death": 0.5, "sex_age_incompatible": 0.01, "no_indication": 0.01,
         "phantom_attachment_never_seen": 0.01, "two_places_overlap": 0.03}


def machine() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(mem, 1), "cpu": model or platform.machine(),
            "python": platform.python_version()}


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f}/{b:.2f}/{c:.2f}"


def parse_sets(items: list[str]) -> dict[str, float]:
    out = dict(FRAUD)
    for item in items:
        key, _, value = item.partition("=")
        if not key.startswith("fraud.") or not value:
            raise SystemExit(f"--set takes fraud.<scheme rate>=<value>, not {item!r}")
        out[key.removeprefix("fraud.")] = float(value)
    return out


def stage(times: dict[str, float], name: str, started: float) -> None:
    times[name] = round(time.monotonic() - started, 2)
    print(f"  {name:<22} {times[name]:>9.2f} s   (load {load()})", flush=True)


def fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(real: dict[str, Any], dev: dict[str, Any]) -> list[str]:
    devrows = {r["scheme"]: r for r in dev["schemes"]}
    lines = [f"{'scheme':<24}{'planted':>8}{'found':>7}{'recall':>8}{'precis.':>8}"
             f"{'planted KZT':>15}{'found KZT':>15}{'ratio':>7}  ok  | dev: rec/prec/ratio"]
    for r in real["schemes"]:
        d = devrows.get(r["scheme"], {})
        lines.append(
            f"{r['scheme']:<24}{r['planted']:>8}{r['findings']:>7}{fmt(r['recall']):>8}"
            f"{fmt(r['precision']):>8}{r['planted_amount']:>15,.0f}{r['amount_at_risk']:>15,.0f}"
            f"{fmt(r['amount_ratio']):>7}  {'yes' if r['passed'] else 'NO ':<3} | "
            f"{fmt(d.get('recall'))}/{fmt(d.get('precision'))}/{fmt(d.get('amount_ratio'))}")
    planted = sum(r["planted_amount"] for r in real["schemes"])
    found = sum(r["amount_at_risk"] for r in real["schemes"])
    lines.append(f"{'total':<24}{'':>31}{planted:>15,.0f}{found:>15,.0f}"
                 f"{fmt(found / planted if planted else None):>7}")
    lines.append(f"floors: recall >= {RECALL_MIN}, precision >= {PRECISION_MIN}, "
                 f"|ratio - 1| <= {AMOUNT_TOLERANCE}; all schemes pass on the real path: "
                 f"{'yes' if real['passed'] else 'NO'}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ov-realpath"))
    ap.add_argument("--reuse", action="store_true",
                    help="keep the nation and the ingested database already in --dir")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="fraud.<rate>=<value>, added to the raised rates")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from usmis.ingest.service import ingest_nation
    from usmis.mpi.service import evaluate as evaluate_links
    from usmis.oversight.evaluation import evaluate_nation
    from usmis.oversight.extract.store import build_store_extract
    from usmis.oversight.service import extract_dir, run_all
    from usmis.synth import generate

    fraud = parse_sets(args.sets)
    nation = args.dir / "nation"
    settings = Settings(data_dir=args.dir / "data", database_url="")
    reuse = args.reuse and (nation / "sources.json").exists() and \
        (args.dir / "data" / "usmis.db").exists()
    if not reuse and args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True, exist_ok=True)

    print(f"machine: {machine()}; load average before: {load()}")
    print(f"workload: {args.people} people, seed {args.seed}, fraud rates raised: {fraud}; "
          f"SQLite (embedded) in {settings.data_dir}" + ("; REUSED nation and database"
                                                          if reuse else ""))
    times: dict[str, float] = {}
    out: dict[str, Any] = {"machine": machine(), "load_before": load(), "people": args.people,
                           "seed": args.seed, "fraud": fraud, "reused": reuse}
    t = time.monotonic()
    if not reuse:
        summary = generate(nation, args.people, args.seed, fraud=fraud)
        stage(times, "synth", t)
        out["records"] = sum(summary.records.values())
        out["planted"] = dict(summary.fraud_instances)
        print(f"    {out['records']} source records, {summary.malformed} malformed, "
              f"planted {out['planted']}")
        t = time.monotonic()
        report = ingest_nation(settings, nation)
        stage(times, "ingest + link", t)
        out["ingest"] = {"resources": report.resources,
                         "resources_per_second": report.resources_per_second,
                         "workers": report.workers,
                         "dead_letters": sum(sum(r.values()) for r in report.dead_letters.values())}
        print(f"    {report.resources} resources stored ({report.resources_per_second}/s, "
              f"{report.workers} worker), {out['ingest']['dead_letters']} dead letters")
    t = time.monotonic()
    links = evaluate_links(settings, nation)
    stage(times, "link quality (eval)", t)
    out["links"] = {k: links.get(k) for k in ("records", "true_persons", "predicted_persons",
                                              "precision", "recall", "unlinked_patients")}
    print(f"    patient index: {out['links']}")

    t = time.monotonic()
    manifest = build_store_extract(settings, full=True)
    stage(times, "oversight extract", t)
    out["extract_rows"] = manifest.rows
    print(f"    builder {manifest.builder}, as of {manifest.as_of}, rows {manifest.rows}")
    t = time.monotonic()
    run = run_all(settings)
    stage(times, "oversight run", t)
    print(f"    {run.findings} findings, {run.amount_at_risk:,.0f} KZT at risk")
    t = time.monotonic()
    real = evaluate_nation(nation, extract=extract_dir(settings), settings=settings)
    stage(times, "evaluate (store)", t)
    t = time.monotonic()
    dev = evaluate_nation(nation, settings=settings)
    stage(times, "evaluate (dev path)", t)

    print(f"\nper scheme, REAL path ({args.people} people, seed {args.seed}; "
          f"load average after: {load()}):")
    print("\n".join(table(real, dev)))
    out.update(times=times, load_after=load(), real=real, dev=dev)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0 if real["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
