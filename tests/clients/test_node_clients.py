"""The real Node SDKs against a real Sluice: `openai`, `@anthropic-ai/sdk` and Vercel's `ai`
SDK (@ai-sdk/openai-compatible, @ai-sdk/openai, @ai-sdk/anthropic), each pointed at the
gateway by base URL only.

The checks live in tests/clients/node/*.test.mjs (node's built-in test runner); this file
starts the gateway in front of the mock providers (`clients_gateway`), runs one `node --test`
per client file with the gateway's URL, key and model names in the environment, and fails
with node's report when any of its tests fails. The packages are pinned in
tests/clients/node/package-lock.json and installed by `npm ci` (`make test` does it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import ANTHROPIC_NATIVE, CLIENT_KEY, EMBED, OPENAI_NATIVE
from tests.gateway_server import RunningGateway

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_TEST_FILES = ("openai.test.mjs", "anthropic.test.mjs", "ai-sdk.test.mjs")
MIN_NODE_MAJOR = 20
NPM_CI = "cd tests/clients/node && npm ci --no-audit --no-fund"
RUN_TIMEOUT_S = 120   # a whole file; each takes a second or two
TEST_TIMEOUT_MS = 20_000  # one node test


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary; skips where there is no Node.js (>= 20)."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not on PATH: the Node client tests need Node.js >= 20 and `npm ci` in tests/clients/node")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        pytest.skip(f"node {version or '(unknown version)'} is too old: the Node client tests need Node.js >= "
                    f"{MIN_NODE_MAJOR}")
    return binary


def check_node_modules() -> None:
    """Fail (not skip) when the pinned packages are not installed: CI and `make test` install them."""
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"tests/clients/node/node_modules is missing: run `{NPM_CI}` (`make test` and CI do it)",
                    pytrace=False)
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    stale = []
    for package, pinned in wanted.items():
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        installed = json.loads(manifest.read_text()).get("version") if manifest.is_file() else None
        if installed != pinned:
            stale.append(f"{package} {installed or 'missing'} (want {pinned})")
    if stale:
        pytest.fail(f"tests/clients/node/node_modules does not match package.json: {', '.join(stale)}; "
                    f"run `{NPM_CI}`", pytrace=False)


@pytest.mark.parametrize("test_file", NODE_TEST_FILES, ids=[f.removesuffix(".test.mjs") for f in NODE_TEST_FILES])
def test_node_client(test_file: str, node: str, clients_gateway: RunningGateway) -> None:
    check_node_modules()
    env = {
        **os.environ,
        "SLUICE_URL": clients_gateway.url,
        "SLUICE_KEY": CLIENT_KEY,
        "SLUICE_MODEL_OPENAI": OPENAI_NATIVE,
        "SLUICE_MODEL_ANTHROPIC": ANTHROPIC_NATIVE,
        "SLUICE_MODEL_EMBED": EMBED,
        "NO_COLOR": "1",
    }
    env.pop("NODE_OPTIONS", None)  # nothing from the caller's shell loads into the clients
    command = [node, "--test", "--test-reporter=spec", f"--test-timeout={TEST_TIMEOUT_MS}", test_file]
    try:
        run = subprocess.run(command, cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"node --test {test_file} did not finish in {RUN_TIMEOUT_S}s:\n{output}", pytrace=False)
    if run.returncode != 0:
        failed = failing_tests(run.stdout)
        summary = f"{len(failed)} failed: " + "; ".join(failed) if failed else f"exit {run.returncode}"
        pytest.fail(f"node --test {test_file}: {summary}\n\n{run.stdout}\n{run.stderr}", pytrace=False)
    # A file that ran nothing (an import that found no tests) must not pass quietly.
    passed = re.search(r"^\u2139 pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) > 0, f"node --test {test_file} ran no test:\n{run.stdout}"


_DURATION = re.compile(r" \([\d.]+m?s\)$")


def failing_tests(report: str) -> list[str]:
    """The failed tests of a spec report, as "suite > test" (the names alone repeat per model)."""
    tree = report.split("\u2716 failing tests:", 1)[0]
    suites: list[tuple[int, str]] = []
    failed = []
    for line in tree.splitlines():
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        mark, name = stripped[:2], _DURATION.sub("", stripped[2:])
        if mark == "\u25b6 ":
            suites.append((indent, name))
        elif mark in ("\u2714 ", "\u2716 "):
            if suites and suites[-1] == (indent, name):
                suites.pop()  # the line that closes a suite
            elif mark == "\u2716 ":
                failed.append(" > ".join([*(s for _, s in suites), name]))
    return failed
