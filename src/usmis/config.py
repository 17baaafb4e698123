"""Settings: the one place that reads the environment (``USMIS_*`` variables).

Everything else receives a :class:`Settings` object.  Defaults are the embedded shape:
a SQLite file and a key file under ``USMIS_DATA_DIR`` (``./usmis-data``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="USMIS_", extra="ignore")

    data_dir: Path = Path("usmis-data")
    # Empty means: a SQLite file in data_dir.  Production: postgresql+psycopg://...
    database_url: str = ""
    # Key-encryption key file (created on first run, mode 600).  Empty: data_dir/keys.json
    key_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool = False
    base_url: str = "http://127.0.0.1:8000"

    # --- access & audit (issue 6; see docs/access.md) ---
    # Embedded issuer: short-lived tokens signed with rotated Ed25519 keys in data_dir.
    token_ttl_seconds: int = 900
    token_audience: str = "usmis"
    signing_key_rotation_days: int = 30
    # Production: non-empty oidc_jwks_url = verify an external OpenID Connect provider's tokens.
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""
    # Policy.  False only for benchmarks measuring the cost of policy + audit.
    policy_enabled: bool = True
    care_encounter_days: int = 90
    emergency_access_minutes: int = 240
    exfil_patients_per_hour: int = 50
    exfil_max_results: int = 1000
    # JSON file overriding the ICD-10 ranges of the consent categories (empty: built-in).
    sensitivity_file: Path | None = None
    audit_enabled: bool = True
    audit_checkpoint_every: int = 500
    # Reads are journaled to a local spool and chained in the background (usmis.audit.spool);
    # false: each read's entry commits in the read's own transaction.
    audit_spool: bool = True
    audit_spool_interval_ms: int = 500

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'usmis.db').resolve()}"

    @cached_property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
