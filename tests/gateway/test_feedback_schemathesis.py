"""Schemathesis against `POST /v1/feedback` as the gateway publishes it (tests/fuzz runs the
other operations on a gateway without telemetry, which does not serve this one): valid and
invalid bodies, each answer a documented status with a body of the documented shape, no
5xx, invalid bodies refused, and nothing logged as an error."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.fuzz.target import gateway_process
from tests.gateway.conftest import gateway_config

CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_schema_conformance", "negative_data_rejection", "unsupported_method"])


def test_feedback_holds_under_schemathesis(primary, backup, tmp_path):
    cfg = gateway_config(primary, backup)
    cfg["telemetry"] = {"writer": "thread", "flush_interval_s": 0.2}
    cfg["data_dir"] = str(tmp_path / "data")
    with gateway_process(cfg, tmp_path) as target:
        rated = httpx.post(f"{target.url}/v1/chat/completions", timeout=10,
                           json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
        ok = httpx.post(f"{target.url}/v1/feedback", timeout=10,
                        json={"request_id": rated.headers["x-sluice-request-id"], "thumbs": "up"})
        assert ok.status_code == 202, ok.text
        schema = tmp_path / "openapi.json"
        schema.write_text(json.dumps(httpx.get(f"{target.url}/openapi.json", timeout=5).json()))
        config = tmp_path / "schemathesis.toml"
        config.write_text("[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 404, 405, 413]\n")
        report = tmp_path / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", str(schema),
             "--url", target.url, "--include-path", "/v1/feedback", "--max-examples", "40", "--seed", "24",
             "--workers", "1", "--request-timeout", "10", "--checks", CHECKS,
             "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--report", "json",
             "--report-json-path", str(report), "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(report.read_text())
        assert result["exit_code"] == 0 and not result["failures"] and not result["errors"], proc.stdout[-6000:]
        assert result["operations"]["tested"] == 1 and result["test_cases"]["generated"] > 20
        target.assert_healthy()
