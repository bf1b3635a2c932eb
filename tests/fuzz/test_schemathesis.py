"""Schemathesis, stateless, against the live gateway's own /openapi.json.

Every documented operation gets generated requests, valid and invalid ones, and each
answer is checked: no 5xx, a documented status and content type, a body matching the
documented schema (error shapes included), invalid requests refused, undocumented methods
answered 405 with Allow. The only change to the served document: `model` is narrowed to
the models configured here (a random name is only ever a 404) that always answer, so any
5xx is the gateway's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fuzz.target import HEALTHY_MODELS, FuzzTarget, examples

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "negative_data_rejection", "unsupported_method",
    "allow_header_conformance", "missing_required_header",
])
REQUEST_SCHEMAS = ("ChatCompletionRequest", "MessagesRequest", "EmbeddingsRequest", "ResponsesRequest")


def run_schemathesis(target: FuzzTarget, workdir: Path, max_examples: int, seed: int) -> dict:
    doc = httpx.get(f"{target.url}/openapi.json", timeout=5).json()
    for name in REQUEST_SCHEMAS:
        doc["components"]["schemas"][name]["properties"]["model"] = {"enum": list(HEALTHY_MODELS)}
    schema = workdir / "openapi.json"
    schema.write_text(json.dumps(doc))
    report = workdir / "report.json"
    config = workdir / "schemathesis.toml"
    # A body over server.max_body_bytes is refused with 413 before it is read as JSON.
    config.write_text("[checks.negative_data_rejection]\n"
                      "expected-statuses = [400, 401, 403, 404, 405, 413, 429, 431]\n")
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", str(schema),
           "--url", target.url,
           "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
           "--request-timeout", "10", "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
           "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
           "--output-truncate", "true", "--no-color"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["exit_code"] == 0 and not result["failures"] and not result["errors"], proc.stdout[-6000:]
    return result


def _run(target: FuzzTarget, tmp_path: Path, n: int) -> None:
    result = run_schemathesis(target, tmp_path, n, seed=20261206)
    cases = result["test_cases"]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10
    assert cases["generated"] > 0 and cases["with_failures"] == 0
    target.assert_healthy()
    print(f"\nschemathesis: {cases['generated']} test cases, {cases['with_failures']} with failures, "
          f"{result['running_time']:.1f}s")


def test_openapi_document_holds_under_schemathesis(fuzz_target, tmp_path, request):
    _run(fuzz_target, tmp_path, examples(20, 20, request))


@pytest.mark.fuzz_long
def test_openapi_document_holds_under_schemathesis_long(fuzz_target, tmp_path, request):
    _run(fuzz_target, tmp_path, examples(20, 500, request))
