"""ClickHouse unreachable, on the server path: a gateway whose `telemetry.clickhouse_url` is
an HTTP server URL nobody listens on (the real clickhouse-connect HTTP client tries it and
fails), serving three tenants. Requests must not notice; rows wait in the bounded queue,
what overflows is counted; when ClickHouse is reachable again (the client factory of
tests/telemetry/test_outage.py then opens the session's chDB: no server binary runs here)
the queued rows arrive, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from telemetry import Telemetry
from tests.conftest import BACKUP_KEY, PRIMARY_KEY
from tests.faults.conftest import (
    A_FALLBACK,
    KEYS,
    OTHERS,
    Background,
    FaultGateway,
    FaultRow,
    Suite,
    check_others,
    model,
    summary,
    unique_prompt,
    wait_until,
)
from tests.gateway_server import start_gateway
from tests.telemetry.test_outage import Outage, _closed_port

QUEUE_MAX = 40


@pytest.fixture(scope="module")
def unreachable(primary, backup, chdb_url, ch) -> Iterator[tuple[FaultGateway, Outage]]:
    database = f"faults_outage_{time.monotonic_ns()}"
    url = f"http://default:not-a-real-password@127.0.0.1:{_closed_port()}/{database}"
    outage = Outage(url, chdb_url)

    class OutageTelemetry(Telemetry):
        @classmethod
        def from_config(cls, cfg, data_dir, *, client_factory=None):
            return Telemetry.from_config(cfg, data_dir, client_factory=outage)

    fast = {"connect_s": 1, "read_s": 1, "total_s": 3}
    cfg = {
        "telemetry": {"clickhouse_url": url, "queue_max": QUEUE_MAX, "flush_interval_s": 0.1,
                      "retry_backoff_s": 0.3, "connect_timeout_s": 0.5},
        "cache": {"enabled": False},
        "keys": [{"key": k, "tenant": t} for t, k in KEYS.items()],
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY, "timeouts": fast},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY, "timeouts": fast},
        },
        "models": {A_FALLBACK: model("primary", "ma", ("backup", "claude-a")), "b-chat": model("primary", "mb"),
                   "c-chat": model("backup", "claude-c")},
        "router": {"retries": 1, "backoff_base_s": 0.01},
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gateway.runtime.Telemetry", OutageTelemetry)
        running = start_gateway(cfg)
    try:
        yield FaultGateway(running), outage
    finally:
        running.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_clickhouse_unreachable(suite: Suite, unreachable, fault_row: FaultRow) -> None:
    fg, outage = unreachable
    fault_row.fault = "ClickHouse unreachable (server URL, closed port)"
    assert set(OTHERS) | {"team-a"} == set(KEYS)
    with Background(fg) as others:
        during = fg.concurrently([lambda s=s: fg.call("team-a", A_FALLBACK, unique_prompt("ch down"), stream=s)
                                  for s in (False, True)] * 6)
        # The writer keeps trying (and failing) meanwhile; the queue stays bounded.
        assert wait_until(lambda: outage.attempts >= 2 and fg.dropped() > 0, timeout_s=20)
    served_down = fg.served
    dropped_down = fg.dropped()
    depth = fg.metric("sluice_telemetry_queue_depth", queue="requests")
    fault_row.client = (f"{summary(during)}; while down: {served_down} served, {depth:g} rows queued "
                        f"(queue_max {QUEUE_MAX}), {dropped_down:g} dropped and counted")
    fault_row.others = check_others(others.outcomes, suite.baseline)
    assert depth <= QUEUE_MAX
    assert fg.rows(flush_s=0.5) is None                        # nothing can be written yet

    outage.recover()                                           # ClickHouse is back
    fault_row.accounting = fg.accounted()
    rows_back = fg.rows()
    for _ in range(5):
        fg.call("team-b", "b-chat", unique_prompt("after"))
    assert wait_until(lambda: (fg.rows() or 0) >= (rows_back or 0) + 5, timeout_s=20, every_s=0.3)
    fault_row.accounting = fg.accounted()
    fault_row.recovered = f"yes: the {rows_back} queued rows arrived, new rows written"
    for o in during:
        assert (o.status, o.ended) == (200, "complete"), o
