"""`usmis` commands of the synth domain (merged into the top-level CLI by usmis.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(no_args_is_help=True)


@app.command()
def synth(
    people: int = typer.Option(2000, help="number of people in the nation"),
    seed: int = typer.Option(1, help="random seed (same arguments → byte-identical output)"),
    out: Path = typer.Option(..., help="output folder (created; must be empty)"),  # noqa: B008
    visits_per_year: float = typer.Option(3.0, help="outpatient visits per person per year"),
    malformed: float = typer.Option(0.003, help="share of malformed messages/rows"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Write a synthetic nation: 31 source systems' feeds plus ground truth."""
    from usmis.synth import generate

    opts: dict[str, Any] = {"visits_per_year": visits_per_year,
                            "noise": {"malformed": malformed}}
    if quiet:
        summary = generate(out, people, seed, **opts)
    else:
        with Progress(TextColumn("people"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as bar:
            task = bar.add_task("people", total=people)
            summary = generate(out, people, seed,
                               progress=lambda done, _total: bar.update(task, completed=done),
                               **opts)
    records = sum(summary.records.values())
    typer.echo(f"{summary.people} people, {summary.sources} sources, {records} records, "
               f"{summary.malformed} malformed, "
               f"{sum(summary.fraud_instances.values())} fraud instances in {summary.seconds}s "
               f"→ {summary.out}")
