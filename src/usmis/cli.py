"""The ``usmis`` command.  Thin: parses arguments and calls services.

Each domain owns its commands in ``usmis/<domain>/cli.py``; they are merged here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from usmis.access import cli as access_cli
from usmis.audit import cli as audit_cli
from usmis.config import Settings
from usmis.fhir import cli as fhir_cli
from usmis.ingest import cli as ingest_cli
from usmis.kit import logging as kit_logging
from usmis.mpi import cli as mpi_cli
from usmis.oversight import cli as oversight_cli
from usmis.synth import cli as synth_cli
from usmis.vault import cli as vault_cli

app = typer.Typer(no_args_is_help=True, help="USMIS: the Unified State Medical Information System.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")

for domain_app in (
    synth_cli.app,
    fhir_cli.app,
    vault_cli.app,
    access_cli.app,
    audit_cli.app,
    ingest_cli.app,
    mpi_cli.app,
    oversight_cli.app,
):
    if domain_app.registered_commands or domain_app.registered_groups:
        app.add_typer(domain_app)


@app.callback()
def _setup() -> None:
    s = Settings()
    kit_logging.configure(s.log_level, s.log_json)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema (every domain) to the newest revision."""
    from usmis.kit.db import upgrade

    s = Settings()
    s.ensure_data_dir()
    upgrade(s.resolved_database_url)
    typer.echo("database is up to date")


@db_app.command("reindex")
def db_reindex(
    resource_type: Annotated[list[str] | None, typer.Option(
        "--type", help="only these resource types (repeat); default: all")] = None,
) -> None:
    """Write the search index of every stored resource again (after fhir_search_0005)."""
    from rich.progress import Progress

    from usmis.fhir.reindex import reindex
    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import make_engine

    s = Settings()
    engine = make_engine(s.resolved_database_url)
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("reindexing", total=None)
            n = reindex(engine, keyring_for(s.resolved_key_file), types=resource_type or None,
                        progress=lambda rtype, k: bar.update(
                            task, advance=k, description=f"reindexing {rtype}"))
    finally:
        engine.dispose()
    typer.echo(f"reindexed {n} resources")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = typer.Option(1, help="uvicorn worker processes (stateless; scale out freely)"),
    migrate: bool = typer.Option(True, help="bring the schema up to date first (first run)"),
) -> None:
    """Serve the FHIR API, the admin API and the portals."""
    import uvicorn

    from usmis.kit.crypto import keyring_for
    from usmis.kit.db import upgrade

    s = Settings()
    s.ensure_data_dir()
    if migrate:  # idempotent; makes the embedded SQLite file on a fresh machine
        upgrade(s.resolved_database_url)
    keyring_for(s.resolved_key_file)  # create the key file (mode 600) before workers race
    uvicorn.run(
        "usmis.app:serve_app", factory=True, host=host, port=port, workers=workers,
        log_level=s.log_level.lower(),
    )


@app.command()
def demo(
    people: int = typer.Option(500, help="size of the synthetic nation (people)"),
    seed: int = typer.Option(1, help="seed of the synthetic nation"),
    serve_api: bool = typer.Option(True, "--serve/--no-serve", help="serve the API at the end"),
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """The whole flow: synthetic nation → ingest → link → oversight → serve."""
    import os

    from rich.console import Console

    from usmis.demo import run_demo

    # The progress bars are the demo's output; structured logs only for warnings unless the
    # user asked for more (the ingest workers are subprocesses and inherit this).
    os.environ.setdefault("USMIS_LOG_LEVEL", "WARNING")
    s = Settings()
    kit_logging.configure(s.log_level, s.log_json)
    console = Console()
    result = run_demo(s, people=people, seed=seed, console=console)
    t = result.tokens
    base = f"http://{host}:{port}"
    console.print("[bold]5. try it[/] (tokens valid 8 hours; the policy is on)")
    console.print(f"   oversight report: {result.report_path}")
    # Tokens go out unwrapped (plain echo) so they can be copied whole.
    typer.echo(f"   clinician of organization {t['organization_id']}:\n{t['clinician']}")
    typer.echo(f"   patient {t['patient_id']} (attached there):\n{t['patient']}")
    typer.echo(f"   auditor:\n{t['auditor']}")
    typer.echo(f"   investigator:\n{t['investigator']}")
    typer.echo(f"   e.g.: curl -H 'Authorization: Bearer <clinician token>' "
               f"'{base}/fhir/Patient/{t['patient_id']}/$everything'")
    if serve_api:
        import uvicorn

        from usmis.app import create_app

        typer.echo(f"serving {base}/fhir  (Ctrl-C to stop)")
        uvicorn.run(create_app(s), host=host, port=port)


def main() -> None:
    app()
