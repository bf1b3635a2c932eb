"""The mock upstream provider's public API (implemented in the `gateway.mock` package)."""

from gateway.mock import FaultRule, MockOptions, MockUpstream, create_mock_app, mock_server, run_mock_upstream

__all__ = ["FaultRule", "MockOptions", "MockUpstream", "create_mock_app", "mock_server", "run_mock_upstream"]
