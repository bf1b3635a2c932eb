"""Opening ClickHouse: the embedded engine (chDB) or a server, behind one Client API.

`chdb://<dir>` opens the in-process engine (one per process: chDB refuses a second path),
`http(s)://user:pw@host:8123[/db]` a server or cluster. `ClickHouseConnection` is what the
writers share: it connects lazily, runs the migrations on the first successful connect,
and forgets the client after a failure so the next attempt reconnects. It never raises
into the request path: only the background writers and `Telemetry.start()` call it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from telemetry.schema import CURRENT_VERSION, current_version, migrate

if TYPE_CHECKING:
    from telemetry.config import ClickHouseLayout, TelemetryConfig

log = logging.getLogger("sluice.telemetry")

ClientFactory = Callable[[], Client]


def default_url(data_dir: Path) -> str:
    """The embedded default: chDB files under the Sluice data directory."""
    return f"chdb://{(Path(data_dir) / 'clickhouse').resolve()}"


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def url_database(url: str) -> str | None:
    """The database named in a server URL's path (`http://host:8123/sluice` -> `sluice`)."""
    if url.startswith("chdb://"):
        return None
    path = urlsplit(url).path.strip("/")
    return path or None


def open_client(url: str, *, connect_timeout_s: float = 5.0) -> Client:
    """A connected client; raises clickhouse_connect's OperationalError when unreachable."""
    if url.startswith("chdb://"):
        Path(url[len("chdb://"):]).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=url)
    # Connect without a database: it may not exist before the first migration; every
    # statement Sluice runs names its database explicitly.
    parts = urlsplit(url)
    return clickhouse_connect.get_client(
        dsn=urlunsplit(parts._replace(path="")),
        connect_timeout=max(1, math.ceil(connect_timeout_s)),   # the driver wants whole seconds
        send_receive_timeout=max(30, math.ceil(connect_timeout_s)),
        # Two writer threads share this client: per-session query locking would make
        # concurrent inserts fail with "session is locked".
        autogenerate_session_id=False,
    )


class ChdbBusyError(RuntimeError):
    """The embedded chDB directory is held by another process (a running `sluice serve`)."""


def open_from_config(cfg: "TelemetryConfig", data_dir: Path) -> tuple[Client, str]:
    """(client, database) for CLI commands (`sluice migrate`, `sluice report`).

    chDB allows one process per data directory: while `sluice serve` runs on the embedded
    default, a second process cannot open it, and this raises ChdbBusyError saying so.
    """
    url = cfg.clickhouse_url or default_url(data_dir)
    database = url_database(url) or cfg.database
    try:
        return open_client(url, connect_timeout_s=cfg.connect_timeout_s), database
    except Exception as exc:
        if url.startswith("chdb://") and "chdb engine" in str(exc):
            raise ChdbBusyError(
                f"cannot open the embedded ClickHouse at {url[len('chdb://'):]}: it is in use "
                f"(chDB allows one process per directory and one directory per process; is "
                f"`sluice serve` running on it?) ({exc})"
            ) from exc
        raise


class SchemaBehindError(RuntimeError):
    """The database's schema is older than this version of Sluice needs, and this process
    does not migrate (`telemetry.migrate_on_start: false`): `sluice migrate` has not run yet."""

    def __init__(self, database: str, have: int, need: int) -> None:
        super().__init__(f"ClickHouse database {database} is at schema version {have}, this Sluice needs "
                         f"{need}: run `sluice migrate` (the Helm chart's migration Job)")
        self.have, self.need = have, need


def check_schema(client: Client, database: str) -> None:
    """Raise SchemaBehindError unless `database` has every migration this version knows."""
    have = current_version(client, database)
    if have < CURRENT_VERSION:
        raise SchemaBehindError(database, have, CURRENT_VERSION)


class ClickHouseConnection:
    """A lazily (re)connected client shared by the background writers (thread-safe).

    With `run_migrations=False` it migrates nothing and hands out no client until the
    schema is current (SchemaBehindError): rows wait in the writers' queues instead of
    failing on columns an old schema lacks."""

    def __init__(
        self, factory: ClientFactory, database: str, *, ttl_days: int = 30,
        run_migrations: bool = True, description: str = "clickhouse",
        cluster: "ClickHouseLayout | None" = None,
    ) -> None:
        self._factory = factory
        self.database = database
        self._ttl_days = ttl_days
        self._run_migrations = run_migrations
        self._cluster = cluster
        self.description = description          # for logs: never contains a password
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._migrated = False

    def get(self) -> Client:
        """The client, connecting (and migrating once) if needed; raises when unreachable."""
        with self._lock:
            if self._client is None:
                client = self._factory()
                if self._run_migrations and not self._migrated:
                    applied = migrate(client, self.database, ttl_days=self._ttl_days, cluster=self._cluster)
                    if applied:
                        log.info("telemetry: applied migrations %s on %s",
                                 applied, self.description)
                    self._migrated = True
                elif not self._migrated:
                    check_schema(client, self.database)      # SchemaBehindError: retried later
                    self._migrated = True
                self._client = client
            return self._client

    def invalidate(self, client: Client) -> None:
        """Forget `client` after a failure so the next `get()` reconnects."""
        with self._lock:
            if self._client is client:
                self._client = None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection must not fail shutdown
                log.debug("telemetry: error closing ClickHouse client", exc_info=True)
