"""`usmis` commands of the vault domain (merged into the top-level CLI by usmis.cli)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
