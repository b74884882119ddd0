"""``python -m services.activity.migrate``: bring the activity database to the latest schema."""
from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).parent / "migrations"


def main(database_url: str | None = None) -> None:
    upgrade(MIGRATIONS, database_url or Settings.from_env("activity").database_url)


if __name__ == "__main__":
    main()
