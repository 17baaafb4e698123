"""`usmis keys …`: the key-encryption keys of the identity vault and the record store."""

from __future__ import annotations

import typer

from usmis.config import Settings

app = typer.Typer(no_args_is_help=True)
keys_app = typer.Typer(no_args_is_help=True, help="Key-encryption keys (envelope encryption).")
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    purge: bool = typer.Option(False, help="forget the old KEKs once nothing uses them"),
    batch: int = typer.Option(1000, help="rows re-wrapped per committed batch"),
) -> None:
    """Re-wrap every data key under a new KEK; servers keep serving meanwhile."""
    from usmis.kit.crypto import LocalKeyFile
    from usmis.kit.db import make_engine
    from usmis.vault.rotation import rotate

    s = Settings()
    s.ensure_data_dir()
    engine = make_engine(s.resolved_database_url)
    try:
        report = rotate(engine, LocalKeyFile(s.resolved_key_file), batch=batch, purge=purge)
    finally:
        engine.dispose()
    typer.echo(f"current key-encryption key: {report.new_kek_id}")
    for table, n in report.rewrapped.items():
        typer.echo(f"  {table}: {n} data keys re-wrapped")
    if report.purged:
        typer.echo(f"  purged {len(report.purged)} retired key(s)")


@keys_app.command("status")
def keys_status() -> None:
    """Which KEK is current and how many data keys each KEK wraps."""
    from sqlalchemy import func, select

    from usmis.kit.crypto import LocalKeyFile
    from usmis.kit.db import make_engine
    from usmis.vault.rotation import envelope_tables

    s = Settings()
    kf = LocalKeyFile(s.resolved_key_file)
    engine = make_engine(s.resolved_database_url)
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for t in envelope_tables():
                for kid, n in conn.execute(
                    select(t.c.kek_id, func.count()).group_by(t.c.kek_id)
                ).all():
                    if kid is not None:
                        counts[kid] = counts.get(kid, 0) + int(n)
    finally:
        engine.dispose()
    current = kf.current_kek_id()
    for kid in kf.kek_ids():
        mark = "current" if kid == current else "retired"
        typer.echo(f"{kid}  {mark}  {counts.get(kid, 0)} data keys")
