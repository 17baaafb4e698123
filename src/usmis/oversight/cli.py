"""`usmis oversight ...` commands (merged into the top-level CLI by usmis.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from usmis.config import Settings

app = typer.Typer(no_args_is_help=True)
oversight = typer.Typer(no_args_is_help=True,
                        help="Budget oversight: fraud rules, findings, cases.")
app.add_typer(oversight, name="oversight")


def _rule_list(rules: str | None) -> list[str] | None:
    return [r.strip() for r in rules.split(",") if r.strip()] if rules else None


def _settings() -> Settings:
    """Settings with the data folder made and the schema up to date (idempotent): extract
    and run write pseudonyms, watermarks and findings, also on a fresh data folder."""
    from usmis.kit.db import upgrade

    s = Settings()
    s.ensure_data_dir()
    upgrade(s.resolved_database_url)
    return s


@oversight.command("rules")
def rules_cmd() -> None:
    """List the rule catalogue."""
    from usmis.oversight.catalogue import load_catalogue

    for r in load_catalogue():
        typer.echo(f"{r.id:<26} v{r.version}  {r.severity:<8} {r.title}")


@oversight.command("extract")
def extract_cmd(
    nation: Annotated[Path | None, typer.Option(
        "--nation", help="DEV/EVALUATION PATH: build from a synthetic nation's feeds, "
        "with ground-truth person ids standing in for linked person keys")] = None,
    out: Annotated[Path | None, typer.Option(
        help="extract folder (default: DATA_DIR/oversight/extract)")] = None,
    full: Annotated[bool, typer.Option(
        help="store path: ignore the watermark, extract everything")] = False,
) -> None:
    """Write the pseudonymised analytical extract (Parquet)."""
    s = _settings()
    if nation is not None:
        from usmis.oversight.extract.nation import build_nation_extract
        from usmis.oversight.service import extract_dir

        target = out or extract_dir(s)
        manifest = build_nation_extract(nation, target, settings=s, save_pseudonyms=True)
    else:
        from usmis.oversight.extract.store import build_store_extract

        manifest = build_store_extract(s, out=out, full=full)
    typer.echo(json.dumps({"builder": manifest.builder, "as_of": manifest.as_of,
                           "watermark": manifest.watermark, "rows": manifest.rows}, indent=2))


@oversight.command("run")
def run_cmd(
    rules: Annotated[str | None, typer.Option(
        help="comma-separated rule ids (default: all)")] = None,
    extract: Annotated[Path | None, typer.Option(help="extract folder")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Run the rule catalogue over the extract and store the findings."""
    from usmis.kit.errors import UsmisError
    from usmis.oversight.service import run_all

    try:
        summary = run_all(_settings(), extract=extract, rules=_rule_list(rules))
    except (UsmisError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    if fmt == "json":
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    typer.echo(f"run {summary.run_id} (extract as of {summary.as_of}, {summary.builder})")
    typer.echo(f"{'rule':<26}{'findings':>9}{'at risk, KZT':>18}{'exp. recovery':>18}{'s':>8}")
    for r in summary.rules:
        typer.echo(f"{r.rule_id:<26}{r.findings:>9}{r.amount_at_risk:>18,.0f}"
                   f"{r.expected_recovery:>18,.0f}{r.seconds:>8.2f}")
    typer.echo(f"{'total':<26}{summary.findings:>9}{summary.amount_at_risk:>18,.0f}"
               f"{summary.expected_recovery:>18,.0f}")


@oversight.command("report")
def report_cmd(
    fmt: Annotated[str, typer.Option("--format", help="html | csv")] = "html",
    out: Annotated[Path | None, typer.Option(
        help="file to write (default: DATA_DIR/oversight/report.FORMAT)")] = None,
) -> None:
    """Write the report of the latest run: HTML with charts, or CSV of ranked findings."""
    from usmis.oversight.service import oversight_dir, write_report

    s = Settings()
    path = out or oversight_dir(s) / f"report.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(str(write_report(s, path, fmt)))


@oversight.command("evaluate")
def evaluate_cmd(
    nation_dir: Path,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    extract: Annotated[Path | None, typer.Option(
        help="use this extract instead of building one from the nation's feeds")] = None,
) -> None:
    """Score the rules against a synthetic nation's planted fraud (ground truth)."""
    from usmis.oversight.evaluation import evaluate_nation, render_table

    result = evaluate_nation(nation_dir, extract=extract, settings=Settings())
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(render_table(result))
    if not result["passed"]:
        raise typer.Exit(1)
