"""Build the Sluice image and run it the way a cluster would, without a container runtime.

There is no Docker daemon here and `podman run` cannot start containers in this sandbox
(../shared/ENVIRONMENT.md), but buildah builds images with chroot isolation and can mount
an image's root filesystem. So:

- the base image (the Dockerfile's `ARG BASE`) is bootstrapped once with mmdebstrap and
  imported (`localhost/sluice-base:bookworm`), both cached: a second run reuses them;
- `build()` runs `buildah bud --layers` (cached layers: a rebuild with unchanged sources is
  seconds), with this machine's CA, pip configuration and local torch wheel mounted (a
  harness detail: the Dockerfile itself stays standard);
- `RunningImage` starts the image's own ENTRYPOINT, with the image's environment, as the
  image's USER, in a private mount namespace on a read-only view of the image's root, with
  tmpfs on /tmp and the data directory and the config directory bound read-only at
  /etc/sluice: what the Helm chart's securityContext and volumes give a pod. The namespace
  dies with the process, so nothing stays mounted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tools" / "image"
BASE_TAG = "localhost/sluice-base:bookworm"
BASE_TARBALL = CACHE / "base-bookworm.tar"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
TOOLS = ("buildah", "podman", "mmdebstrap", "unshare", "chroot", "mount")
# Figures the image test measured, printed at the end of the run (tests/deploy/conftest.py).
REPORT: list[str] = []


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(*cmd: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)


def _image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0


def ensure_base() -> str:
    """The locally bootstrapped Debian bookworm + python3 base (cached tarball and image)."""
    if _image_exists(BASE_TAG):
        return BASE_TAG
    if not BASE_TARBALL.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = BASE_TARBALL.with_suffix(".part")
        _run("mmdebstrap", "--variant=minbase", "--format=tar", f"--include={BASE_PACKAGES}",
             "bookworm", str(partial))
        partial.replace(BASE_TARBALL)
    _run("podman", "import", "-q", str(BASE_TARBALL), BASE_TAG)
    return BASE_TAG


def _harness_mounts() -> list[str]:
    """This machine's CA, pip configuration and local wheels, for pip inside RUN steps."""
    flags = []
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/opt/wheels"):
        if os.path.exists(path):
            flags += ["-v", f"{path}:{path}:ro"]
    return flags


def build(tag: str, *, extras: str, bake_embeddings: bool = False, spacy_model: str = "") -> float:
    """Build the repository's Dockerfile as `tag`; returns the seconds it took."""
    base = ensure_base()
    args = {"BASE": base, "EXTRAS": extras, "BAKE_EMBEDDINGS": "true" if bake_embeddings else "false",
            "SPACY_MODEL": spacy_model, "PIP_EXTRA_INDEX_URL": ""}
    if os.path.isdir("/opt/wheels"):
        args["PIP_FIND_LINKS"] = "/opt/wheels"
    cmd = ["buildah", "bud", "--isolation", "chroot", "--layers", "-t", tag, *_harness_mounts()]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    previous = _image_id(tag)
    started = time.monotonic()
    result = subprocess.run([*cmd, str(ROOT)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"buildah bud failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    elapsed = time.monotonic() - started
    if previous and previous != _image_id(tag):
        # The last build of this tag is now untagged: drop it (GBs for [all]) unless a
        # cached layer still needs it (then rmi refuses, and it stays).
        subprocess.run(["podman", "rmi", previous], capture_output=True)
    return elapsed


def _image_id(tag: str) -> str | None:
    result = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    return result.stdout.strip() or None if result.returncode == 0 else None


def image_config(tag: str) -> dict:
    out = _run("buildah", "inspect", "--type", "image", tag).stdout
    return json.loads(out)["OCIv1"]["config"]


def image_size(tag: str) -> int:
    return int(_run("podman", "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


class MountedImage:
    """A working container of `tag` with its root filesystem mounted (buildah from + mount)."""

    def __init__(self, tag: str):
        self.tag = tag
        self.config = image_config(tag)
        self.container = _run("buildah", "from", "--pull-never", tag).stdout.strip().splitlines()[-1]
        self.rootfs = _run("buildah", "mount", self.container).stdout.strip()
        self._views: list[Path] = []

    def close(self) -> None:
        subprocess.run(["buildah", "umount", self.container], capture_output=True)
        subprocess.run(["buildah", "rm", self.container], capture_output=True)
        for view in self._views:
            shutil.rmtree(view, ignore_errors=True)

    def __enter__(self) -> "MountedImage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def popen(self, args: list[str], *, config_dir: Path | None = None, entrypoint: list[str] | None = None,
              extra_env: dict[str, str] | None = None, stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT) -> subprocess.Popen:
        """Run `entrypoint + args` (default: the image's ENTRYPOINT) as the image's USER with its
        Env (plus `extra_env`, as a Kubernetes Secret would add) and WorkingDir, on a read-only
        view of the root with tmpfs at /tmp and the data dir."""
        view = Path(tempfile.mkdtemp(prefix="sluice-ro-"))
        self._views.append(view)
        env = dict(e.split("=", 1) for e in self.config.get("Env", []))
        env.update(extra_env or {})
        data_dir = env.get("SLUICE_DATA_DIR", "/var/lib/sluice")
        user = self.config.get("User") or "0:0"
        uid, _, gid = user.partition(":")
        command = [*(entrypoint if entrypoint is not None else self.config.get("Entrypoint") or []), *args]
        inner = ["/usr/bin/env", "-i", f"--chdir={self.config.get('WorkingDir') or '/'}",
                 *(f"{k}={v}" for k, v in env.items()), *command]
        q = shlex.quote
        script = "\n".join([
            "set -e",
            f"mount --bind {q(self.rootfs)} {q(str(view))}",
            f"mount -o remount,bind,ro {q(str(view))}",
            f"mount -t tmpfs -o size=256m,mode=1777 tmpfs {q(str(view))}/tmp",
            f"mount -t tmpfs -o size=512m,uid={uid},gid={gid or uid},mode=0700 tmpfs {q(str(view) + data_dir)}",
            f"mount --rbind /dev {q(str(view))}/dev",
            f"mount -t proc proc {q(str(view))}/proc",
            *([f"mount --bind -o ro {q(str(config_dir))} {q(str(view))}/etc/sluice"] if config_dir else []),
            f"exec chroot --userspec={q(user)} {q(str(view))} {' '.join(q(c) for c in inner)}",
        ])
        return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                stdout=stdout, stderr=stderr, text=True)
