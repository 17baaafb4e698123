"""Shared fixtures of the FHIR tests (live server, keys, engine, admin token)."""

from fhir.conftest import admin_token, engine, keys, live_server  # noqa: F401
