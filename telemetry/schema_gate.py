"""The schema gate: a gateway that does not migrate waits for the schema it needs.

With `telemetry.migrate_on_start: false` (the Helm chart sets it: its hook Job runs
`sluice migrate` before the new pods start), a gateway must never take traffic on a schema
older than it writes. Kubernetes keeps such a pod out of the Service while `/readyz`
answers 503, and a rolling update stops there, with the old pods serving, instead of
running new code on an old schema. A crash-looping process would do the same for the
rollout, but a 503 naming both versions says why, and the pod becomes ready on its own the
moment the migration lands, with no restart.

- behind (`have < need`): not ready; checked again every `interval_s` until current.
- current: ready, never checked again (migrations only move forward).
- unknown (ClickHouse unreachable): ready. Telemetry never takes the gateway down, and
  nothing reaches an old schema anyway: the writers' connection refuses to hand out a
  client until it has seen the schema current (`ClickHouseConnection`, run_migrations=False),
  so rows wait in their bounded queues.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from pathlib import Path

from telemetry.clickhouse import ClientFactory, SchemaBehindError, check_schema, default_url, open_client, \
    redact_url, url_database
from telemetry.config import TelemetryConfig

log = logging.getLogger("sluice.telemetry")


class SchemaGate:
    """Whether this process may serve on the ClickHouse schema it finds (blocking checks:
    call `check()` from a thread)."""

    def __init__(self, factory: ClientFactory | None, database: str, *, description: str = "clickhouse",
                 interval_s: float = 5.0) -> None:
        self._factory = factory
        self._database = database
        self._description = description
        self.interval_s = interval_s
        self._lock = threading.Lock()
        # None: nothing to wait for. Else the reason /readyz gives while the schema is behind.
        self.problem: str | None = None
        self.settled = factory is None

    @classmethod
    def from_config(cls, cfg: TelemetryConfig, data_dir: Path, *,
                    client_factory: ClientFactory | None = None) -> "SchemaGate":
        """A gate that waits only when this process leaves migrations to someone else."""
        if not cfg.enabled or cfg.migrate_on_start:
            return cls(None, cfg.database)
        url = cfg.clickhouse_url or default_url(data_dir)
        factory = client_factory or partial(open_client, url, connect_timeout_s=cfg.connect_timeout_s)
        return cls(factory, url_database(url) or cfg.database, description=redact_url(url))

    def check(self) -> str | None:
        """Look at the schema once (unless already settled); return the problem, if any."""
        if self.settled or self._factory is None:
            return self.problem
        with self._lock:
            try:
                check_schema(self._factory(), self._database)
            except SchemaBehindError as exc:
                if self.problem != str(exc):
                    log.warning("not ready: %s", exc)
                self.problem = str(exc)
                return self.problem
            except Exception as exc:     # unreachable: ready, and the writers wait (see above)
                log.warning("schema gate: ClickHouse at %s unavailable (%s); serving, rows wait for the "
                            "schema check", self._description, exc)
                self.problem = None
                return None
            if self.problem is not None:
                log.info("ClickHouse schema is current: ready")
            self.problem = None
            self.settled = True
            return None

    async def watch(self) -> None:
        """Check every `interval_s` until settled (the migration Job may still be running)."""
        while not self.settled:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.check)
