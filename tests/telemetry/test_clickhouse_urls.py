"""Server URL handling (no ClickHouse server can run here: the parsing and the failure mode)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from telemetry.clickhouse import default_url, open_client, redact_url, url_database


def test_default_url_is_under_the_data_dir(tmp_path):
    assert default_url(tmp_path) == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert default_url(Path(".sluice")).endswith("/.sluice/clickhouse")


@pytest.mark.parametrize(("url", "db"), [
    ("http://ch:8123/sluice", "sluice"), ("https://u:p@ch:8443/prod_traces/", "prod_traces"),
    ("http://ch:8123", None), ("chdb:///var/lib/sluice/clickhouse", None),
])
def test_database_from_url(url, db):
    assert url_database(url) == db


def test_passwords_never_reach_logs():
    assert redact_url("https://sluice:s3cret@ch.example:8443/db") == \
        "https://sluice:***@ch.example:8443/db"
    assert redact_url("http://ch:8123") == "http://ch:8123"


def test_unreachable_server_fails_fast_with_operational_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(OperationalError):
        open_client(f"http://default:pw@127.0.0.1:{port}/sluice", connect_timeout_s=0.2)
    assert time.monotonic() - t0 < 5
