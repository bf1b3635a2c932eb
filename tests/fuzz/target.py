"""What the fuzzers share: the models, the example counts, and the gateway under test
with what it logged and how much memory it holds."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.gateway_server import RunningGateway

# Models whose every deployment answers; any 5xx for them is the gateway's fault.
HEALTHY_MODELS = ("gpt", "claude", "chat-default", "embed")
# Models whose deployments fail on purpose: a 502/503/504 is the configured fault showing.
FAULTY_MODELS = ("all-down",)


def examples(bounded: int, long: int, request: pytest.FixtureRequest) -> int:
    if os.environ.get("SLUICE_FUZZ_EXAMPLES"):
        return int(os.environ["SLUICE_FUZZ_EXAMPLES"])
    return long if request.node.get_closest_marker("fuzz_long") else bounded


def rss_bytes() -> int:
    """Resident memory of this process (the gateway runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class ErrorLog(logging.Handler):
    """Every ERROR record the gateway logs while fuzzed (an unhandled error's traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FuzzTarget:
    gateway: RunningGateway
    errors: ErrorLog
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.gateway.url.removeprefix("http://").split(":")
        return host, int(port)

    def assert_healthy(self) -> None:
        assert httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        ok = httpx.post(f"{self.url}/v1/chat/completions", timeout=10,
                        json={"model": "gpt", "messages": [{"role": "user", "content": "still there?"}]})
        assert ok.status_code == 200, ok.text
        logged = [f"{r.name}: {r.getMessage()}" for r in self.errors.records]
        assert not logged, f"the gateway logged errors while fuzzed: {logged[:5]}"
