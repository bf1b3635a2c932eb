"""Serve the mock upstream with uvicorn (uvloop + httptools, the fastest stack it offers)."""

from __future__ import annotations

import uvicorn

from gateway.mock.app import create_mock_app
from gateway.mock.options import MockOptions


def mock_server(host: str, port: int, options: MockOptions, log_level: str = "warning") -> uvicorn.Server:
    """A configured, not yet started server (tests run it in a thread; `run_mock_upstream` blocks)."""
    config = uvicorn.Config(
        create_mock_app(options),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=4096,
        # requests held open by a timeout fault must not hold shutdown for long
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


def run_mock_upstream(host: str, port: int, options: MockOptions) -> None:
    """Serve until SIGINT / SIGTERM (used by `sluice mock-upstream` and `python -m gateway.mock`)."""
    mock_server(host, port, options).run()
