"""A real gateway in front of the two mock providers, for the fuzzers.

Bounded by default (part of `make test`, a fixed seed, well under a minute on two cores);
`make fuzz` runs the `fuzz_long` tests, which `make test` skips. `SLUICE_FUZZ_EXAMPLES`
overrides the example counts of either.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Mock
from tests.fuzz.target import FuzzTarget, gateway_process
from tests.gateway.conftest import gateway_config


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The long runs are for `make fuzz` (`-m fuzz_long`), not for every `make test`.
    if "fuzz_long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: `make fuzz` (pytest -m fuzz_long)")
    for item in items:
        if item.get_closest_marker("fuzz_long"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def fuzz_target(primary: Mock, backup: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    cfg = gateway_config(primary, backup)
    # Big enough that the request limits (not the body size) answer the large bodies; the
    # exact cache on (its keys walk the whole body), small so that it cannot pass for a leak.
    cfg["server"] = {"max_body_bytes": 1024 * 1024}
    cfg["cache"] = {"enabled": True, "default": {"mode": "exact"}, "embedded_max_bytes": 4 * 1024 * 1024}
    workdir = tmp_path_factory.mktemp("fuzz-gateway")
    cfg["data_dir"] = str(workdir / "data")
    with gateway_process(cfg, workdir) as target:
        yield target
