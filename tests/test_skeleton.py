from sqlalchemy import inspect

from usmis.config import Settings
from usmis.kit.db import make_engine


def test_fresh_database_is_migrated(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    try:
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
