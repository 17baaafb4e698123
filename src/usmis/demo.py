"""``usmis demo``, the main job: synthetic nation → ingest → link → oversight → serve.

Every stage is the real one (real MLLP listener, real REST channel, the file channel, the
patient index, the oversight catalogue on DuckDB); the demo only strings them together on
embedded defaults (SQLite file, local key file, DuckDB) and prints what each stage did.
A nation already generated in the data directory is reused, so a second run starts fast.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usmis.config import Settings
from usmis.kit.db import make_engine, upgrade

# Rare schemes raised so that a demo-sized nation plants every kind at least once; the
# statistical ones (upcoding, volume spikes) are only measurable from a few thousand people.
DEMO_FRAUD = {"after_death": 0.5, "sex_age_incompatible": 0.01, "no_indication": 0.01}


@dataclass
class DemoResult:
    nation_dir: Path
    report_path: Path
    ingest: dict[str, Any]
    mpi: dict[str, Any]
    oversight: dict[str, Any]
    tokens: dict[str, str]


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )


def make_nation(settings: Settings, people: int, seed: int, console: Console) -> Path:
    from usmis.synth import generate

    nation = settings.data_dir / "nation"
    marker = nation / "sources.json"
    if marker.exists():
        console.print(f"[bold]1. synthetic nation[/] reusing {nation}")
        return nation
    if nation.exists():  # a half-written nation from an interrupted run
        shutil.rmtree(nation)
    console.print(f"[bold]1. synthetic nation[/] {people} people, seed {seed}")
    with _bar(console) as bar:
        task = bar.add_task("people", total=people)
        summary = generate(nation, people, seed, fraud=DEMO_FRAUD,
                           progress=lambda done, _total: bar.update(task, completed=done))
    console.print(f"   {summary.sources} sources, {sum(summary.records.values())} records, "
                  f"{summary.malformed} malformed, "
                  f"{sum(summary.fraud_instances.values())} planted fraud instances")
    return nation


def ingest(settings: Settings, nation: Path, console: Console) -> dict[str, Any]:
    from usmis.ingest.service import ingest_nation

    console.print("[bold]2. ingest[/] every source through its own channel "
                  "(HL7 v2 over MLLP, FHIR REST, files)")
    with _bar(console) as bar:
        tasks: dict[str, Any] = {}

        def progress(name: str, advance: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            elif total is not None:
                bar.update(tasks[name], total=total)
            bar.advance(tasks[name], advance)

        report = ingest_nation(settings, nation, progress=progress)
    out = report.as_dict()
    rejected = sum(sum(r.values()) for r in report.dead_letters.values())
    console.print(f"   {report.resources} resources stored in {report.seconds}s "
                  f"({report.resources_per_second}/s), {rejected} rejected to dead letters "
                  f"(see `usmis deadletters list`)")
    return out


def link(settings: Settings, nation: Path, console: Console) -> dict[str, Any]:
    from usmis.mpi.service import evaluate

    console.print("[bold]3. patient index[/] every source record was matched as it arrived; "
                  "scored against the ground truth:")
    figures = evaluate(settings, nation)
    table = Table("measure (pairwise unless named)", "value")
    for key in ("records", "true_persons", "predicted_persons", "precision", "recall",
                "cluster_precision", "cluster_recall", "review_share", "unlinked_patients"):
        if key in figures:
            value = figures[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    return figures


def oversee(settings: Settings, nation: Path, console: Console) -> tuple[dict[str, Any], Path]:
    from usmis.oversight.evaluation import evaluate_nation, render_table
    from usmis.oversight.extract.store import build_store_extract
    from usmis.oversight.service import extract_dir, oversight_dir, run_all, write_report

    console.print("[bold]4. oversight[/] pseudonymised extract → rule catalogue on DuckDB")
    build_store_extract(settings, full=True)
    summary = run_all(settings)
    report_path = oversight_dir(settings) / "report.html"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_report(settings, report_path, "html")
    console.print(f"   {summary.findings} findings, {summary.amount_at_risk:,.0f} KZT at risk "
                  f"→ {report_path}")
    result = evaluate_nation(nation, extract=extract_dir(settings), settings=settings)
    console.print(render_table(result))
    console.print("   (upcoding and volume spikes are statistical: a nation of a few hundred "
                  "people rarely carries them; docs/oversight.md measures them at 20,000)")
    return result, report_path


def demo_tokens(settings: Settings) -> dict[str, str]:
    """Tokens a user can try: a clinician with a patient in care, that patient, an auditor."""
    from usmis.access.repository import sample_care_link
    from usmis.access.tokens import issue_token

    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            org, patient = sample_care_link(conn)
    finally:
        engine.dispose()
    return {
        "clinician": issue_token(settings, subject=f"clinician:{org}", role="clinician",
                                 org=org, ttl_seconds=8 * 3600),
        "patient": issue_token(settings, subject=f"patient:{patient}", role="patient",
                               patient=patient, ttl_seconds=8 * 3600),
        "auditor": issue_token(settings, subject="auditor:dpo", role="auditor",
                               ttl_seconds=8 * 3600),
        "investigator": issue_token(settings, subject="investigator:1", role="investigator",
                                    ttl_seconds=8 * 3600),
        "patient_id": patient,
        "organization_id": org,
    }


def run_demo(settings: Settings, *, people: int, seed: int, console: Console) -> DemoResult:
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url)
    nation = make_nation(settings, people, seed, console)
    ingested = ingest(settings, nation, console)
    mpi = link(settings, nation, console)
    oversight, report_path = oversee(settings, nation, console)
    tokens = demo_tokens(settings)
    return DemoResult(nation, report_path, ingested, mpi, oversight, tokens)
