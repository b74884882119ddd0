"""``python -m services.points.migrate``: bring the points database to the latest schema."""
from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).parent / "migrations"


def main(database_url: str | None = None) -> None:
    upgrade(MIGRATIONS, database_url or Settings.from_env("points").database_url)


if __name__ == "__main__":
    main()
