"""`usmis mpi …`: the master patient index from the command line (thin: calls services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from usmis.config import Settings

app = typer.Typer(no_args_is_help=True)
mpi_app = typer.Typer(no_args_is_help=True, help="Master patient index: link, review, evaluate.")
review_app = typer.Typer(no_args_is_help=True, help="The registrar's review queue.")
app.add_typer(mpi_app, name="mpi")
mpi_app.add_typer(review_app, name="review")


def _engine(settings: Settings) -> Any:
    from usmis.kit.db import make_engine

    settings.ensure_data_dir()
    return make_engine(settings.resolved_database_url)


def _emit(data: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    _print_tree(data)


def _print_tree(data: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    for k, v in data.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print_tree(v, indent + 1)
        elif isinstance(v, float):
            print(f"{pad}{k}: {v:.6f}" if abs(v) < 10 else f"{pad}{k}: {v:.2f}")
        else:
            print(f"{pad}{k}: {v}")


FORMAT = typer.Option("text", "--format", help="text | json")


NATION_DIR = typer.Argument(..., help="a directory written by `usmis synth`")


@mpi_app.command("evaluate")
def evaluate(
    nation_dir: Path = NATION_DIR,
    fmt: str = FORMAT,
    splink: bool = typer.Option(True, help="also run Splink (defaults) as the reference"),
    links: bool = typer.Option(True, help="also score the links stored in the database (if any)"),
) -> None:
    """Pairwise and cluster figures against the nation's ground truth: the index's batch
    linking on the nation's feeds, an IIN-only baseline and Splink, in one run; and the
    links currently stored in the database."""
    from usmis.mpi.nation import evaluate_nation

    out = evaluate_nation(nation_dir, splink=splink)
    if links:
        from usmis.mpi import service

        settings = Settings()
        try:
            out["stored_links"] = service.evaluate(settings, nation_dir)
        except Exception as exc:  # noqa: BLE001 - no database yet is a normal case here
            out["stored_links"] = {"error": f"not scored ({type(exc).__name__})"}
    _emit(out, fmt)


@mpi_app.command("relink")
def relink(fmt: str = FORMAT) -> None:
    """Re-cluster every source record in batch (retrains the weights); report the changes."""
    from usmis.mpi import service

    _emit(service.relink_all(Settings()), fmt)


@mpi_app.command("stats")
def stats(fmt: str = FORMAT) -> None:
    """Persons, source records, links by method, open review items."""
    from usmis.kit.db import transaction
    from usmis.mpi import service

    engine = _engine(Settings())
    with transaction(engine) as conn:
        _emit(service.stats(conn), fmt)
    engine.dispose()


@review_app.command("list")
def review_list(
    status: str = typer.Option("open"), limit: int = typer.Option(50), fmt: str = FORMAT
) -> None:
    """Items of the review queue (opaque ids and scores only)."""
    from usmis.kit.db import transaction
    from usmis.mpi import service

    engine = _engine(Settings())
    with transaction(engine) as conn:
        items = service.list_review(conn, status=status, limit=limit)
    engine.dispose()
    _emit(
        {
            str(i.id): {"patient": i.patient_id, "candidate_person": i.candidate_person_key,
                        "weight": round(i.score, 3), "probability": round(i.probability, 6)}
            for i in items
        },
        fmt,
    )  # fmt: skip


@review_app.command("decide")
def review_decide(
    review_id: int,
    decision: str = typer.Argument(..., help="link | not-link"),
    reason: str = typer.Option(..., help="why (kept in the link history)"),
    actor: str = typer.Option("registrar:cli"),
) -> None:
    """Decide one review item."""
    from usmis.kit.db import transaction
    from usmis.mpi import service

    if decision not in ("link", "not-link"):
        raise typer.BadParameter("decision must be link or not-link")
    engine = _engine(Settings())
    with transaction(engine) as conn:
        op = service.decide_review(conn, review_id, decision, actor=actor, reason=reason)  # type: ignore[arg-type]
    engine.dispose()
    typer.echo(f"decided {review_id}: {decision} (operation {op or '-'})")


def _operation(fn_name: str, *args: Any, **kwargs: Any) -> Any:
    from usmis.kit.db import transaction
    from usmis.mpi import service

    engine = _engine(Settings())
    with transaction(engine) as conn:
        result = getattr(service, fn_name)(conn, *args, **kwargs)
    engine.dispose()
    return result


REASON = typer.Option(..., help="why (kept in the link history)")
ACTOR = typer.Option("registrar:cli")


@mpi_app.command("link")
def link(patient_id: str, person_key: str, reason: str = REASON, actor: str = ACTOR) -> None:
    """Link a source Patient to a person."""
    typer.echo(_operation("link", patient_id, person_key, actor=actor, reason=reason))


@mpi_app.command("unlink")
def unlink(patient_id: str, reason: str = REASON, actor: str = ACTOR) -> None:
    """Detach a source Patient: it becomes a person of its own (prints the new key)."""
    typer.echo(_operation("unlink", patient_id, actor=actor, reason=reason))


@mpi_app.command("merge")
def merge(from_person: str, into_person: str, reason: str = REASON, actor: str = ACTOR) -> None:
    """Merge two persons (all records of the first move to the second)."""
    typer.echo(_operation("merge", from_person, into_person, actor=actor, reason=reason))


@mpi_app.command("split")
def split(
    person_key: str, patient_ids: list[str], reason: str = REASON, actor: str = ACTOR
) -> None:
    """Move some source Patients of a person to a new person (prints the new key)."""
    typer.echo(_operation("split", person_key, patient_ids, actor=actor, reason=reason))


@mpi_app.command("revert")
def revert(operation_id: str, reason: str = REASON, actor: str = ACTOR) -> None:
    """Undo a link operation (every record it moved goes back)."""
    typer.echo(_operation("revert", operation_id, actor=actor, reason=reason))
