"""`usmis audit …`: verify the hash chain, sign a checkpoint."""

from __future__ import annotations

import typer

from usmis.config import Settings

app = typer.Typer(no_args_is_help=True)
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def verify() -> None:
    """Check every entry, checkpoint and the head; exit 1 naming the first broken entry."""
    from usmis.audit import service
    from usmis.kit.db import make_engine

    settings = Settings()
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        report = service.verify(conn, settings)
    engine.dispose()
    if report.ok:
        typer.echo(
            f"audit log intact: {report.entries} entries, {report.checkpoints} signed "
            f"checkpoints, head at {report.last_seq}"
        )
        return
    typer.echo(f"AUDIT LOG TAMPERED: {report.problem} at entry {report.seq}: {report.message}")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign the current chain head now (run it from cron, e.g. every minute)."""
    from usmis.audit import service
    from usmis.kit.db import make_engine, transaction

    settings = Settings()
    engine = make_engine(settings.resolved_database_url)
    with transaction(engine) as conn:
        seq = service.checkpoint(conn, settings)
    engine.dispose()
    typer.echo(f"checkpoint at entry {seq}")
