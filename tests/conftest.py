"""Session-wide real components shared by every suite: the mock providers, one chDB
engine (one per process is all chDB allows), the embedding model directory, and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.mock_server import start_mock
from tests.redis_server import RedisServer, start_redis

PRIMARY_KEY = "sk-primary-secret"
BACKUP_KEY = "sk-ant-backup-secret"


class Mock:
    """A running mock provider and its control API."""

    def __init__(self, url: str):
        self.url = url

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_mock/requests").json()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_mock/requests")
        httpx.delete(f"{self.url}/_mock/faults")

    def faults(self, *rules: dict) -> None:
        httpx.post(f"{self.url}/_mock/faults", json=list(rules)).raise_for_status()


@pytest.fixture(scope="session")
def primary() -> Iterator[Mock]:
    url, stop = start_mock(api_key=PRIMARY_KEY)
    yield Mock(url)
    stop()


@pytest.fixture(scope="session")
def backup() -> Iterator[Mock]:
    url, stop = start_mock(api_key=BACKUP_KEY)
    yield Mock(url)
    stop()


@pytest.fixture(autouse=True)
def _clean_mocks(request: pytest.FixtureRequest) -> None:
    # Only tests that use the mocks pay for the reset.
    for name in ("primary", "backup"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "clickhouse"


@pytest.fixture(scope="session")
def chdb_url(chdb_path: Path) -> str:
    return f"chdb://{chdb_path}"


@pytest.fixture(scope="session")
def ch(chdb_url: str):
    """The session's chDB client (real ClickHouse engine, in process)."""
    from telemetry.clickhouse import open_client
    yield open_client(chdb_url)


@pytest.fixture(scope="session")
def model_cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The ONNX export takes seconds: keep it across runs in pytest's cache dir when available.
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("sluice-models")) if cache is not None else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def redis_search() -> Iterator[RedisServer]:
    server = start_redis(with_search=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_plain() -> Iterator[RedisServer]:
    server = start_redis(with_search=False)
    yield server
    server.stop()
