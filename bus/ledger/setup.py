"""Setting up a ledger once, before any service uses it: tables, tracking and views.

eventsourcing creates its tables the first time an application is constructed. Two
runtimes starting together on one PostgreSQL then race ``CREATE TABLE IF NOT EXISTS``
(PostgreSQL answers the loser with a unique violation on its catalogue, which
eventsourcing raises as an ``IntegrityError``). So creating is a separate step,
``claimcheck init``, serialised by a PostgreSQL advisory lock (SQLite serialises
writers on the file itself) and safe to run from several places at once; services
open the ledger without creating anything and :func:`check_ledger` says what is
missing instead of racing to make it.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from eventsourcing.persistence import IntegrityError, OperationalError, ProgrammingError

from bus.ledger.store import Ledger, sqlite_or_postgres_env
from bus.transport.connection import NotInitialised

__all__ = ["NotInitialised", "check_ledger", "init_ledger", "open_ledger"]

INIT_LOCK_KEY = zlib.crc32(b"claimcheck-init")
"""The PostgreSQL advisory lock every ``claimcheck init`` takes, so only one creates at a time."""


def open_ledger(url: str) -> Ledger:
    """The ledger of a set-up deployment, opened without creating anything.

    Raises :class:`NotInitialised` (naming the command that fixes it) when a table is missing.
    """
    ledger = Ledger(env={**sqlite_or_postgres_env(url), "CREATE_TABLE": "n"})
    try:
        check_ledger(ledger)
    except NotInitialised:
        ledger.close()
        raise
    return ledger


def check_ledger(ledger: Ledger) -> None:
    """Read from every table a service uses; a missing one is :class:`NotInitialised`."""
    from bus.ledger.relay import TRACKING_NAME

    try:
        ledger.recorder.max_notification_id()
        ledger.factory.tracking_recorder().max_tracking_id(TRACKING_NAME)
    except (OperationalError, ProgrammingError) as error:
        raise NotInitialised(
            "the ledger is not set up (run `claimcheck init` once for this deployment): "
            f"{str(error).splitlines()[0]}"
        ) from None


def init_ledger(url: str, also: Callable[[], object] | None = None, attempts: int = 20) -> None:
    """Create the ledger's tables and the relay's tracking table; idempotent and race-free.

    ``also`` creates more tables under the same protection (the read models' views).
    On PostgreSQL the creating is done under an advisory lock, so concurrent inits wait
    for each other; on SQLite a concurrent writer's ``database is locked`` is retried.
    """
    if urlparse(url).scheme in ("postgres", "postgresql"):
        with _advisory_lock(url):
            _create(url)
            if also is not None:
                also()
        return
    private_file(Path(urlparse(url).path))
    for attempt in range(attempts):
        try:
            _create(url)
            if also is not None:
                also()
            return
        except (OperationalError, IntegrityError):
            # Another init holds the file, or recorded a migration first: look again.
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def private_file(path: Path) -> None:
    """Make ``path`` (a SQLite ledger or views file) readable by its owner alone (0600).

    Created empty if missing (SQLite takes an empty file for an empty database), so it is
    never readable by others even for a moment; SQLite gives its ``-wal`` and ``-shm``
    files the same mode. Agents run as other users (or containers) and must not read the
    ledger: it holds every workflow's recorded replies and evidence.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _create(url: str) -> None:
    ledger = Ledger(env={**sqlite_or_postgres_env(url), "CREATE_TABLE": "y"})
    try:
        ledger.factory.tracking_recorder()  # the constructor creates the tracking table
    finally:
        ledger.close()


class _advisory_lock:
    """A session-level PostgreSQL advisory lock, held on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        import psycopg

        env = sqlite_or_postgres_env(self.url)
        self.connection = psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
            autocommit=True,
        )
        self.connection.execute("SELECT pg_advisory_lock(%s)", (INIT_LOCK_KEY,))

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.connection.execute("SELECT pg_advisory_unlock(%s)", (INIT_LOCK_KEY,))
        finally:
            self.connection.close()
