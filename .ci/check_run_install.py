"""The run install is the product: start `sluice serve` from a venv made the way `make run`
makes it, on the embedded defaults, and check that each default feature README names is on.

    python .ci/check_run_install.py VENV_DIR

Only the standard library here: the venv under test has nothing but what `make run`
installs. Checks, each printed as it passes:
  - the first start logs no ERROR and no traceback (a missing dependency would show here);
  - the semantic cache answers a paraphrase (`x-sluice-cache: semantic-hit`);
  - PII is masked on its way upstream (what the built-in mock provider received) and
    restored in the answer;
  - every request is a row in `llm_requests` (`sluice report` through the running gateway);
  - SIGTERM drains and the process exits 0.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

READY_TIMEOUT_S = 300          # the first start exports the embedding model to ONNX
EMAIL = "jane.doe@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict[str, str], str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


SENT = [0]                     # chat requests served: each must become a row


def chat(base: str, text: str) -> tuple[dict[str, str], str]:
    SENT[0] += 1
    status, headers, body = call(f"{base}/v1/chat/completions",
                                 {"model": "mock-gpt", "messages": [{"role": "user", "content": text}]})
    if status != 200:
        fail(f"chat answered {status}: {body}")
    return headers, json.loads(body)["choices"][0]["message"]["content"]


def fail(message: str) -> None:
    raise SystemExit(f"run-install check FAILED: {message}")


def passed(message: str) -> None:
    print(f"run-install check: ok: {message}", flush=True)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    fail(f"timed out waiting for {what}")


def main(venv: Path) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sluice-run-install-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / "serve.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(venv / "bin" / "sluice"), "serve", "--port", str(port)], cwd=workdir,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if server.poll() is not None:
                fail(f"sluice serve exited {server.returncode}:\n{log_path.read_text()}")
            try:
                return call(f"{base}/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(ready, READY_TIMEOUT_S, "/readyz")
        passed(f"ready after {time.monotonic() - started:.1f} s (first start, embedded defaults)")
        log_text = log_path.read_text()
        bad = [line for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line]
        if bad:
            fail("the first start logged errors:\n" + log_text)
        passed("no ERROR and no traceback in the start-up log")

        mock = re.search(r"built-in MOCK provider on 127\.0\.0\.1:(\d+)", log_text)
        if mock is None:
            fail("the log does not say where the built-in mock provider listens")
        mock_url = f"http://127.0.0.1:{mock.group(1)}"

        first, _ = chat(base, "How do I reset my password?")
        if first.get("x-sluice-cache") != "miss":
            fail(f"first ask: x-sluice-cache={first.get('x-sluice-cache')}, expected miss")

        def paraphrase_hit() -> dict[str, str] | None:
            headers, _ = chat(base, "How can I reset my password?")
            return headers if headers.get("x-sluice-cache") == "semantic-hit" else None

        hit = wait_for(paraphrase_hit, 20, "a semantic hit on a paraphrase")
        passed(f"semantic cache: paraphrase answered from cache (similarity {hit.get('x-sluice-cache-similarity')})")

        _, answer = chat(base, f"Please write to {EMAIL} about the invoice")
        status, _, seen = call(f"{mock_url}/_mock/requests")
        upstream = json.loads(seen)[-1]["body"]["messages"][-1]["content"]
        if EMAIL in upstream:
            fail(f"the e-mail address reached the provider: {upstream!r}")
        if EMAIL not in answer:
            fail(f"the masked e-mail was not restored in the answer: {answer!r}")
        passed(f"PII masked upstream ({upstream!r}) and restored in the answer")

        def rows() -> int:
            status, _, text = call(f"{base}/sluice/report?since=1h&by=model", timeout=60)
            match = re.search(r"^mock-gpt\s+(\d+)", text, re.MULTILINE) if status == 200 else None
            count = int(match.group(1)) if match else 0
            return count if count == SENT[0] else 0

        count = wait_for(rows, 60, f"{SENT[0]} requests in llm_requests")
        passed(f"all {count} requests served are rows in llm_requests (sluice report via the running gateway)")

        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        if code != 0:
            fail(f"sluice serve exited {code} after SIGTERM:\n{log_path.read_text()[-3000:]}")
        passed("SIGTERM: drained and exited 0")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: check_run_install.py VENV_DIR")
    sys.exit(main(Path(sys.argv[1])))
