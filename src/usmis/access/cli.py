"""`usmis` commands of the access domain: tokens, users, clients, signing keys."""

from __future__ import annotations

import typer

from usmis.config import Settings

ROLES = "patient|clinician|registrar|investigator|auditor|admin|source"

app = typer.Typer(no_args_is_help=True)
users_app = typer.Typer(no_args_is_help=True, help="Users of the embedded token issuer.")
clients_app = typer.Typer(no_args_is_help=True, help="OAuth2 clients (source systems).")
keys_app = typer.Typer(no_args_is_help=True, help="The token issuer's signing keys.")
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="signing-keys")


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from usmis.kit.db import make_engine

    settings.ensure_data_dir()
    return make_engine(settings.resolved_database_url)


@app.command("token")
def token(
    role: str = typer.Option("admin", help=ROLES),
    org: str = typer.Option(None, help="organization id the principal acts for"),
    patient: str = typer.Option(None, help="role patient: the patient's own Patient id"),
    source: str = typer.Option(None, help="role source: the source system id"),
    scope: str = typer.Option(None, help="SMART scopes, space separated (default per role)"),
    speciality: str = typer.Option(None, help="clinician speciality code"),
    purpose: str = typer.Option(None, help="HL7 v3 PurposeOfUse code (default per role)"),
    sub: str = typer.Option(None, help="subject (default: derived from role and org)"),
    user: str = typer.Option(None, help="issue for this registered user instead"),
    ttl: int = typer.Option(None, help="lifetime in seconds (default USMIS_TOKEN_TTL_SECONDS)"),
) -> None:
    """Print a signed bearer token (embedded issuer) for tests and demos."""
    from usmis.access import service
    from usmis.access.tokens import issue_token
    from usmis.kit.db import transaction

    settings = Settings()
    settings.ensure_data_dir()
    try:
        if user:
            with transaction(_engine(settings)) as conn:
                issued = service.token_for_user(
                    conn, settings, user, check=False, scope=scope, purpose=purpose,
                    ttl_seconds=ttl,
                )
                service.record_login(conn, settings, issued.principal, outcome="success")
            typer.echo(issued.access_token)
            return
        subject = sub or ":".join(x for x in (role, org or source or patient) if x)
        typer.echo(
            issue_token(
                settings, subject=subject, role=role, org=org, speciality=speciality,
                scope=scope, patient=patient, source=source, purpose=purpose, ttl_seconds=ttl,
            )
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@users_app.command("add")
def users_add(
    username: str,
    role: str = typer.Option(..., help=ROLES),
    org: str = typer.Option(None),
    speciality: str = typer.Option(None),
    patient: str = typer.Option(None),
    source: str = typer.Option(None),
    scope: str = typer.Option(None),
    password: str = typer.Option(None, help="enables the password grant at /auth/token"),
) -> None:
    """Register a user of the embedded issuer."""
    from usmis.access import service
    from usmis.kit.db import transaction
    from usmis.kit.errors import UsmisError

    settings = Settings()
    try:
        with transaction(_engine(settings)) as conn:
            service.add_user(
                conn, username=username, role=role, org=org, speciality=speciality,
                patient=patient, source=source, scope=scope, password=password,
            )
    except (UsmisError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"user {username} added")


@users_app.command("list")
def users_list() -> None:
    """List registered users (opaque ids only)."""
    from usmis.access import repository
    from usmis.kit.db import transaction

    with transaction(_engine(Settings())) as conn:
        for row in repository.list_users(conn):
            typer.echo(
                f"{row['username']}\t{row['role']}\t{row['organization_id'] or '-'}\t"
                f"{row['scope']}"
            )


@clients_app.command("add")
def clients_add(
    client_id: str,
    source: str = typer.Option(..., help="the source system id this client writes as"),
    org: str = typer.Option(None),
    scope: str = typer.Option(None),
) -> None:
    """Register a source system for the client_credentials grant; prints its secret once."""
    from usmis.access import service
    from usmis.kit.db import transaction
    from usmis.kit.errors import UsmisError

    settings = Settings()
    try:
        with transaction(_engine(settings)) as conn:
            secret = service.add_client(conn, client_id=client_id, source=source, org=org,
                                        scope=scope)
    except (UsmisError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"client_id={client_id}")
    typer.echo(f"client_secret={secret}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Start signing with a new key; older keys verify until their tokens have expired."""
    from usmis.access.keys import KeyRing

    settings = Settings()
    settings.ensure_data_dir()
    key = KeyRing(settings).rotate()
    typer.echo(f"active signing key: {key.kid}")
