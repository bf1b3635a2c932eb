"""What the fuzzers share: the models, the example counts, and the gateway under test,
run in a process of its own so that its memory and its log are its own.

    python -m tests.fuzz.target CONFIG_JSON    # prints the URL, serves until stdin closes
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Models whose every deployment answers; any 5xx for them is the gateway's fault.
HEALTHY_MODELS = ("gpt", "claude", "chat-default", "embed")
# Models whose deployments fail on purpose: a 502/503/504 is the configured fault showing.
FAULTY_MODELS = ("all-down",)
# What the gateway must never log while fuzzed: an unhandled error, its traceback.
_BAD_LOG = re.compile(r"^(ERROR|CRITICAL)\b|Traceback \(most recent call last\)", re.MULTILINE)


def examples(bounded: int, long: int, request: pytest.FixtureRequest) -> int:
    if os.environ.get("SLUICE_FUZZ_EXAMPLES"):
        return int(os.environ["SLUICE_FUZZ_EXAMPLES"])
    return long if request.node.get_closest_marker("fuzz_long") else bounded


@dataclass
class FuzzTarget:
    url: str
    pid: int
    log: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("the gateway process is gone")

    def assert_healthy(self) -> None:
        assert httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        ok = httpx.post(f"{self.url}/v1/chat/completions", timeout=10,
                        json={"model": "gpt", "messages": [{"role": "user", "content": "still there?"}]})
        assert ok.status_code == 200, ok.text
        text = self.log.read_text(errors="replace")
        found = _BAD_LOG.search(text)
        assert found is None, f"the gateway logged an error while fuzzed:\n{text[found.start():][:3000]}"


@contextmanager
def gateway_process(cfg: dict, workdir: Path) -> Iterator[FuzzTarget]:
    config = workdir / "gateway.json"
    config.write_bytes(orjson.dumps(cfg))
    log = workdir / "gateway.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.target", str(config)], cwd=REPO_ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file)
        try:
            url = proc.stdout.readline().decode().strip()
            assert url.startswith("http://"), log.read_text(errors="replace")[-3000:]
            yield FuzzTarget(url, proc.pid, log)
        finally:
            proc.stdin.close()                      # asks it to stop
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(config_path: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tests.gateway_server import start_gateway
    gw = start_gateway(orjson.loads(Path(config_path).read_bytes()))
    print(gw.url, flush=True)
    sys.stdin.read()                                # until the test closes our stdin
    gw.stop()


if __name__ == "__main__":
    main(sys.argv[1])
