"""The container image, built from the repository's Dockerfile and run as a cluster runs it:
its own ENTRYPOINT, as its own numeric user, on a read-only root with tmpfs for /tmp and the
data directory, the config mounted read-only, secrets as environment (tests/deploy/image_harness.py).

`make test` builds the bare gateway (EXTRAS="", about a minute cold, seconds warm: layers
and the bootstrapped base are cached); `make image-test` builds `[all]` with the embedding
model baked in (SLUICE_IMAGE_EXTRAS=all SLUICE_IMAGE_BAKE=1), which takes minutes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy import image_harness as harness
from tests.gateway_server import free_port

pytestmark = pytest.mark.image

EXTRAS = os.environ.get("SLUICE_IMAGE_EXTRAS", "")
BAKE = os.environ.get("SLUICE_IMAGE_BAKE", "") == "1"
TAG = f"localhost/sluice:test-{EXTRAS.replace(',', '-') or 'bare'}{'-baked' if BAKE else ''}"
MOCK_KEY = "sk-mock-image-test"


@pytest.fixture(scope="module")
def image() -> harness.MountedImage:
    missing = harness.missing_tools()
    assert not missing, f"missing {missing}: `make image-tools` installs them (make test does)"
    seconds = harness.build(TAG, extras=EXTRAS, bake_embeddings=BAKE)
    size = harness.image_size(TAG)
    harness.REPORT.append(f"{TAG}: EXTRAS={EXTRAS or '(none)'} bake_embeddings={BAKE}, built in {seconds:.0f} s, "
                  f"{size / 1e6:.0f} MB")
    with harness.MountedImage(TAG) as mounted:
        yield mounted


def _wait(url: str, proc, timeout_s: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            resp = httpx.get(url, timeout=1)
            if resp.status_code == 200:
                return resp
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout_s} s")


def _stop(proc) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_image_runs_as_a_numeric_non_root_user_with_no_secret_baked_in(image):
    assert image.config["User"] == "10001:10001"
    env = dict(e.split("=", 1) for e in image.config["Env"])
    assert env["SLUICE_DATA_DIR"] == "/var/lib/sluice" and env["HF_HUB_OFFLINE"] == "1"
    assert not [k for k in env if "KEY" in k or "TOKEN" in k or "PASSWORD" in k]


def test_root_filesystem_is_read_only_for_the_process(image):
    proc = image.popen(["-c", "touch /opt/sluice/x; touch /tmp/ok && touch /var/lib/sluice/ok && echo writable-ok"],
                       entrypoint=["/bin/sh"])
    out = proc.communicate(timeout=30)[0]
    assert "Read-only file system" in out and "writable-ok" in out, out


def test_gateway_serves_health_and_a_request_through_the_mock_provider(image, tmp_path):
    mock_port, port = free_port(), free_port()
    telemetry = {"enabled": False} if "chdb" not in EXTRAS and "all" not in EXTRAS else {}
    config = {
        "providers": {"mock": {"type": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1",
                               "api_key": "${MOCK_PROVIDER_KEY}"}},
        "models": {"chat-default": {"deployments": [{"provider": "mock", "model": "mock-gpt"}]}},
        "keys": [{"key": "${GATEWAY_KEY}", "tenant": "image-test"}],
        "telemetry": telemetry,
    }
    if BAKE:   # the semantic cache on the baked ONNX export: nothing to download or export at start
        config["cache"] = {"enabled": True, "default": {"mode": "semantic"}}
    config_dir = tmp_path / "config"
    config_dir.mkdir(mode=0o755)
    (config_dir / "sluice.yaml").write_text(yaml.safe_dump(config))
    (config_dir / "sluice.yaml").chmod(0o644)                 # as a ConfigMap volume mounts it
    mock = image.popen(["mock-upstream", "--host", "127.0.0.1", "--port", str(mock_port), "--api-key", MOCK_KEY])
    gateway = image.popen(["serve", "--host", "127.0.0.1", "--port", str(port), "--config", "/etc/sluice/sluice.yaml"],
                          config_dir=config_dir,
                          extra_env={"MOCK_PROVIDER_KEY": MOCK_KEY, "GATEWAY_KEY": "sk-gateway-image-test"})
    try:
        started = time.monotonic()
        assert _wait(f"http://127.0.0.1:{port}/healthz", gateway).json() == {"status": "ok"}
        _wait(f"http://127.0.0.1:{port}/readyz", gateway)
        ready_s = time.monotonic() - started
        assert _uid(gateway.pid) == 10001 and _uid(mock.pid) == 10001
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                          headers={"authorization": "Bearer sk-gateway-image-test"},
                          json={"model": "chat-default", "messages": [{"role": "user", "content": "hello image"}]})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        seen = httpx.get(f"http://127.0.0.1:{mock_port}/_mock/requests").json()
        assert any("hello image" in str(r) for r in seen)
        harness.REPORT.append(f"  ran: entrypoint as uid 10001 on a read-only root (tmpfs /tmp and /var/lib/sluice, "
                      f"config bound read-only), mock-upstream from the same image; ready in {ready_s:.1f} s; "
                      f"/healthz, /readyz, POST /v1/chat/completions -> 200")
    finally:
        out = _stop(gateway)
        _stop(mock)
    assert "Traceback" not in out and "ERROR" not in out, out
    if BAKE:
        assert "exported the local embedding model" not in out, out   # the baked ONNX file, as is
