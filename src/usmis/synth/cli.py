"""`usmis` commands of the synth domain (merged into the top-level CLI by usmis.cli)."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(no_args_is_help=True)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (``fraud.after_death=0.2``, ``months=12``) → generate() options."""
    from usmis.synth.options import FraudRates, NoiseRates, SynthOptions

    fields = {f.name: f for f in dataclasses.fields(SynthOptions)}
    groups = {"noise": {f.name for f in dataclasses.fields(NoiseRates)},
              "fraud": {f.name for f in dataclasses.fields(FraudRates)}}
    out: dict[str, Any] = {"noise": {}, "fraud": {}}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value: {key}")
        group, dot, name = key.partition(".")
        if dot:
            if group not in groups or name not in groups[group]:
                raise typer.BadParameter(f"unknown option {key}")
            out[group][name] = float(raw)
        elif key in fields and key not in ("people", "seed", "noise", "fraud"):
            out[key] = date.fromisoformat(raw) if key == "period_start" else \
                (int(raw) if key in ("months", "messages_per_file") else float(raw))
        else:
            raise typer.BadParameter(f"unknown option {key}")
    return out


@app.command()
def synth(
    people: int = typer.Option(2000, help="number of people in the nation"),
    seed: int = typer.Option(1, help="random seed (same arguments → byte-identical output)"),
    out: Path = typer.Option(..., help="output folder (created; must be empty)"),  # noqa: B008
    set_: list[str] = typer.Option(  # noqa: B008
        [], "--set", help="override an option, e.g. --set fraud.after_death=0.2 "
        "--set noise.typo=0.05 --set visits_per_year=2 (see docs/nation.md)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Write a synthetic nation: 31 source systems' feeds plus ground truth."""
    from usmis.synth import generate

    opts = _overrides(set_)
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
    for scheme, n in sorted(summary.fraud_instances.items()):
        typer.echo(f"  {scheme:<24} {n:>6} instances  {summary.fraud_amounts[scheme]:>16,.2f} KZT")
