"""The composition root every service uses: one object wiring settings, database, outbox,
inbox, the HTTP app and the worker. Built by ``create_app()`` or a worker's ``main()``, never at
import time."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from flask import Flask, current_app
from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from shared.auth import install_internal_auth
from shared.config import Settings
from shared.consumer import Handler
from shared.db import make_engine, make_session_factory
from shared.events import new_event
from shared.logging import configure_logging
from shared.outbox import enqueue
from shared.web import GuangmangApi, broker_check, create_base_app, database_check
from shared.worker import Worker


class ServiceKit:
    """Settings, engine, session factory and messaging tables of one service."""

    def __init__(self, settings: Settings, metadata: MetaData, *, pre_ping: bool = True) -> None:
        self.settings = settings
        self.metadata = metadata
        self.engine = make_engine(settings.database_url, pre_ping=pre_ping)
        self.sessions = make_session_factory(self.engine)
        self.outbox = metadata.tables["outbox"]
        self.inbox = metadata.tables["inbox"]

    @property
    def service(self) -> str:
        return self.settings.service

    def emit(self, session: Session, name: str, data: dict[str, Any], *, subject: Any, sequence: int = 1) -> None:
        """Write one event to this service's outbox in the caller's transaction."""
        enqueue(session, self.outbox, new_event(
            name, data, service=self.service, subject=str(subject),
            street=self.settings.street, sequence=sequence))

    def create_app(self, title: str, register: Callable[[Flask, GuangmangApi], None], *,
                   internal_auth: bool = True, openapi_prefix: str = "/") -> Flask:
        """The service's Flask app: base skeleton, internal-token guard, and its blueprints."""
        app, api = create_base_app(
            self.service, title=title, openapi_prefix=openapi_prefix,
            checks={"database": database_check(self.engine), "broker": broker_check(self.settings.broker_url)})
        app.extensions["guangmang"] = self
        if internal_auth:
            install_internal_auth(app, self.settings.internal_secret)
        register(app, api)
        return app

    def worker(self, handlers: Sequence[Handler]) -> Worker:
        """This service's worker: ``handlers`` as consumers, plus the outbox relay."""
        return Worker(settings=self.settings, session_factory=self.sessions, outbox=self.outbox,
                      inbox=self.inbox, handlers=list(handlers))

    def dispose(self) -> None:
        self.engine.dispose()


def kit() -> ServiceKit:
    """The ServiceKit of the app handling the current request."""
    return current_app.extensions["guangmang"]


def bootstrap(service: str, metadata: MetaData, settings: Settings | None = None, *,
              worker: bool = False) -> ServiceKit:
    """Read settings from the environment (unless given), set up logging, build the kit.

    A worker's kit skips the pool pre-ping: its loops recover from a failed transaction anyway.
    """
    settings = settings or Settings.from_env(service)
    configure_logging(service, settings.log_level)
    return ServiceKit(settings, metadata, pre_ping=not worker)
