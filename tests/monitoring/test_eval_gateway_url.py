"""Where the evaluators' re-asks and judge calls go when `evaluators.gateway_url` is unset:
the server the monitor runs in (`sluice serve --host/--port`), the chart's Service
(`SLUICE_GATEWAY_URL` for `sluice monitor run`), else 127.0.0.1:8080."""

from __future__ import annotations

import argparse

import pytest

from gateway.cli import serving_gateway_url
from gateway.config import parse_config
from gateway.monitor_cli import GATEWAY_URL_ENV
from monitoring.evaluators.config import (
    DEFAULT_GATEWAY_URL,
    EvaluatorsConfig,
    local_gateway_url,
)

BASE = {"providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}},
        "models": {"m": {"deployments": [{"provider": "p", "model": "m"}]}}}


@pytest.mark.parametrize(("host", "url"), [("0.0.0.0", "http://127.0.0.1:9000"), ("::", "http://127.0.0.1:9000"),
                                            ("127.0.0.1", "http://127.0.0.1:9000"), ("::1", "http://[::1]:9000"),
                                            ("gw.internal", "http://gw.internal:9000")])
def test_a_serving_address_becomes_the_url_this_host_reaches_it_by(host, url):
    assert local_gateway_url(host, 9000) == url


def test_unset_is_the_default_and_a_set_url_is_kept():
    assert EvaluatorsConfig().gateway_url is None
    assert EvaluatorsConfig().resolved_gateway_url == DEFAULT_GATEWAY_URL
    assert EvaluatorsConfig(gateway_url="https://gw.example/").resolved_gateway_url == "https://gw.example"


def test_sluice_serve_points_an_unset_url_at_its_own_port():
    cfg = parse_config(BASE)
    serving_gateway_url(cfg, "0.0.0.0", 8123)
    assert cfg.monitoring.evaluators.resolved_gateway_url == "http://127.0.0.1:8123"
    pinned = parse_config({**BASE, "monitoring": {"evaluators": {"gateway_url": "http://elsewhere:80"}}})
    serving_gateway_url(pinned, "0.0.0.0", 8123)
    assert pinned.monitoring.evaluators.resolved_gateway_url == "http://elsewhere:80"


def test_monitor_run_takes_the_charts_service_url(monkeypatch, tmp_path):
    from gateway import monitor_cli
    seen = {}
    cfg = parse_config(BASE)
    monkeypatch.setenv(GATEWAY_URL_ENV, "http://rel-sluice:80/")
    monkeypatch.setattr(monitor_cli, "_config", lambda args: cfg)
    monkeypatch.setattr(monitor_cli, "_embedder", lambda c: seen.setdefault("url", c.monitoring.evaluators.gateway_url))
    monkeypatch.setattr(monitor_cli, "_run_forever", lambda c, e: 0)
    assert monitor_cli.cmd_monitor_run(argparse.Namespace(once=False)) == 0
    assert seen["url"] == "http://rel-sluice:80"


def test_monitor_run_refuses_a_service_url_that_is_not_http(monkeypatch, capsys):
    from gateway import monitor_cli
    monkeypatch.setenv(GATEWAY_URL_ENV, "rel-sluice:80")
    monkeypatch.setattr(monitor_cli, "_config", lambda args: parse_config(BASE))
    assert monitor_cli.cmd_monitor_run(argparse.Namespace(once=False)) == 2
    assert "SLUICE_GATEWAY_URL: must start with http:// or https://" in capsys.readouterr().err
