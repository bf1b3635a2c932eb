"""/metrics and /sluice/* show every tenant: with `server.ops_token` only the bearer of the
token is answered, whoever the peer; without it /sluice/* answers this host only."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import gateway_config
from tests.gateway_server import start_gateway

OPS_TOKEN = "ops-token-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded(primary, backup):
    gw = start_gateway(gateway_config(primary, backup, server={"ops_token": OPS_TOKEN}))
    yield gw
    gw.stop()


def test_metrics_and_report_need_the_token(guarded):
    for path in ("/metrics", "/sluice/report"):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": OPS_TOKEN}):
            resp = httpx.get(f"{guarded.url}{path}", headers=headers)
            assert resp.status_code == 401, (path, headers)
            assert resp.json()["error"]["code"] == "invalid_ops_token" and OPS_TOKEN not in resp.text
    ok = httpx.get(f"{guarded.url}/metrics", headers={"authorization": f"Bearer {OPS_TOKEN}"})
    assert ok.status_code == 200 and "sluice_" in ok.text


def test_without_a_token_report_answers_this_host_only(gateway):
    other_source = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    resp = other_source.get(f"{gateway.url}/sluice/report")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "ops_loopback_only"
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200      # Prometheus scrapes over the network
