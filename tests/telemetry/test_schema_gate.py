"""The schema gate: with `telemetry.migrate_on_start: false` (the Helm chart's setting, its
hook Job migrates), a gateway is not ready, and writes nothing, while the ClickHouse schema
is older than it needs; it becomes ready by itself once the migration lands."""

from __future__ import annotations

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from telemetry.clickhouse import SchemaBehindError, open_client
from telemetry.config import TelemetryConfig
from telemetry.schema import CURRENT_VERSION, current_version, migrate
from telemetry.schema_gate import SchemaGate
from tests.gateway_server import free_port, start_gateway

MOCK_PROVIDER = {"providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                 "models": {"m": {"deployments": [{"provider": "p", "model": "m"}]}}}


def _server_config(database: str) -> dict:
    """A ClickHouse *server* URL (nothing listens there): the gate's client is swapped for chDB."""
    return {"clickhouse_url": f"http://127.0.0.1:{free_port()}", "database": database,
            "migrate_on_start": False, "writer": "thread", "retry_backoff_s": 0.2}


def test_the_gate_names_both_versions_until_the_schema_is_current(ch, database, tmp_path):
    gate = SchemaGate.from_config(TelemetryConfig.model_validate(_server_config(database)), tmp_path,
                                  client_factory=lambda: ch)
    assert not gate.settled
    assert gate.check() == (f"ClickHouse database {database} is at schema version 0, this Sluice needs "
                            f"{CURRENT_VERSION}: run `sluice migrate` (the Helm chart's migration Job)")
    migrate(ch, database, target=CURRENT_VERSION - 1)
    assert f"at schema version {CURRENT_VERSION - 1}," in gate.check()
    assert not gate.settled
    migrate(ch, database)
    assert gate.check() is None
    assert gate.settled


def test_a_gateway_that_migrates_itself_has_no_gate(tmp_path):
    gate = SchemaGate.from_config(TelemetryConfig(), tmp_path)
    assert gate.settled and gate.check() is None


def test_readyz_is_503_while_the_schema_is_behind_and_200_after_the_migration(ch, database):
    cfg = {**MOCK_PROVIDER, "telemetry": _server_config(database)}
    # ClickHouse unreachable at start: the gate cannot tell, and telemetry never takes the
    # gateway down, so it starts ready (the writers still wait for the schema, next test).
    gw = start_gateway(cfg)
    try:
        readyz = next(r for r in gw.app.app.routes if getattr(r, "path", "") == "/readyz")
        gate: SchemaGate = readyz.app._schema_gate
        assert httpx.get(gw.url + "/readyz").status_code == 200
        gate._factory = lambda: ch                     # now ClickHouse answers, on an empty database
        gate.check()
        resp = httpx.get(gw.url + "/readyz")
        assert resp.status_code == 503
        assert resp.json() == {"status": "schema_behind", "detail": gate.problem}
        assert f"at schema version 0, this Sluice needs {CURRENT_VERSION}" in resp.json()["detail"]
        assert httpx.get(gw.url + "/healthz").status_code == 200        # alive: no restart loop
        migrate(ch, database)
        gate.check()
        assert httpx.get(gw.url + "/readyz").status_code == 200
    finally:
        gw.stop()


def test_writers_wait_for_the_schema_instead_of_writing_into_an_old_one(ch, chdb_url, database, make_telemetry,
                                                                        wait_for):
    migrate(ch, database, target=1)
    # A client of its own: the sink closes it at shutdown.
    tel = make_telemetry(client_factory=lambda: open_client(chdb_url), **_server_config(database))
    with pytest.raises(SchemaBehindError):
        tel.sink.connection.get()
    assert current_version(ch, database) == 1          # it migrated nothing
    migrate(ch, database)
    assert wait_for(lambda: _connects(tel), timeout_s=5)


def _connects(tel) -> bool:
    try:
        tel.sink.connection.get()
        return True
    except SchemaBehindError:
        return False


@pytest.mark.parametrize("telemetry, message", [
    ({"migrate_on_start": False}, "migrate_on_start: false needs a ClickHouse server"),
    ({"clickhouse_url": "chdb:///tmp/x", "clickhouse": {"cluster": "c"}}, "clickhouse.cluster needs a ClickHouse server"),
])
def test_server_only_options_on_the_embedded_engine_fail_at_start(telemetry, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**MOCK_PROVIDER, "telemetry": telemetry}, {})
