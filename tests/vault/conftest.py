from fhir.conftest import admin_token, live_server  # noqa: F401  (shared fixtures)
