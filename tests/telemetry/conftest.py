"""Fixtures: one chDB engine for the whole session, a fresh database per test.

chDB is one engine per process and refuses a second path, so every test (and every
`Telemetry` a test builds) uses the session's path; isolation comes from databases.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

_counter = itertools.count()


@pytest.fixture
def database(ch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database name unique to the test, dropped afterwards."""
    name = f"t_{next(_counter)}_{request.node.name[:30]}".replace("[", "_").replace("]", "_")
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    yield name
    ch.command(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def wait_for():
    """Poll `predicate` until true or `timeout_s` passes; returns its last value."""
    import time

    def wait(predicate, timeout_s: float = 5.0, every_s: float = 0.01):
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value or time.monotonic() >= deadline:
                return value
            time.sleep(every_s)

    return wait


@pytest.fixture
def make_telemetry(chdb_url: str, database: str, tmp_path: Path):
    """Build (and always shut down) a started Telemetry on the session's chDB."""
    from telemetry import Telemetry, TelemetryConfig

    built = []

    def make(client_factory=None, **overrides) -> Telemetry:
        # writer: thread: the test process already holds the session's chDB engine.
        raw = {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
               "batch_size": 100, "writer": "thread"}
        raw.update(overrides)
        tel = Telemetry.from_config(TelemetryConfig.model_validate(raw), tmp_path,
                                    client_factory=client_factory)
        tel.start()
        built.append(tel)
        return tel

    yield make
    for tel in built:
        tel.shutdown(timeout_s=2)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels in a Prometheus text exposition."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
