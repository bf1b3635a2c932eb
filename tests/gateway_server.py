"""Run a real Sluice gateway (uvicorn, httptools, uvloop) on a free port in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import SluiceConfig, parse_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningGateway:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def gateway(self):
        return self.app.state.gateway

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_gateway(cfg: SluiceConfig | dict) -> RunningGateway:
    if isinstance(cfg, dict):
        cfg = parse_config(cfg, {})
    port = free_port()
    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", http="httptools",
                                           log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return RunningGateway(url, app, server, thread)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.should_exit = True
    raise RuntimeError("gateway did not become ready")
