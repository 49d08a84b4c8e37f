"""Building the project's Dockerfile on the test dockerd, which can pull nothing.

`base_image()` makes the base locally: `debootstrap --variant=minbase bookworm` with Python
and the Debian packages the runtime stage wants (so its apt-get step has nothing to install),
imported with `docker import`. `wheelhouse()` downloads wheels of the project's dependencies
for the base's Python. Both are cached under NELSON_TEST_CACHE (default
/var/cache/nelson-tests), keyed by what they contain, so a machine pays for them once.
`build_image()` builds the Dockerfile on that base with the wheels in the build context and
pip told to use only them: the same stages a `docker build .` runs against PyPI.

Run as a program (`python -m tests.imagebuild`) to fill the cache ahead of the tests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
MIRROR = os.environ.get("NELSON_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PYTHON = "3.11"  # bookworm's python3
# What the runtime stage of the Dockerfile installs from Debian, and Python to run on.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "graphviz", "haproxy")
# What the build context holds: what .dockerignore lets in (./wheelhouse is made here).
SOURCES = (
    "Dockerfile",
    ".dockerignore",
    *(
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!") and line != "!wheelhouse/"
    ),
)
# Wheels that run on bookworm's glibc (2.36), every manylinux tag up to it
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    *(f"manylinux{legacy}_x86_64" for legacy in ("2014", "2010", "1")),
)


class ImageUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    path = Path(os.environ.get("NELSON_TEST_CACHE", "/var/cache/nelson-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One process at a time fills one cache entry (parallel test runs share the cache)."""
    with (cache_dir() / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageUnavailable(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def base_tarball() -> Path:
    """A bookworm root filesystem with BASE_PACKAGES, as a tar file (cached)."""
    key = _key(SUITE, MIRROR, BASE_PACKAGES, "minbase", 1)
    tarball = cache_dir() / f"base-{SUITE}-{key}.tar"
    with _locked(tarball.name):
        if tarball.exists():
            return tarball
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise ImageUnavailable(
                "debootstrap is not installed: `apt-get install debootstrap` (scripts/test does it)"
            )
        work = Path(tempfile.mkdtemp(prefix="nelson-base-", dir=cache_dir()))
        try:
            rootfs = work / "rootfs"
            _run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(rootfs),
                    MIRROR,
                ],
                "debootstrap",
            )
            # What an image needs not carry: downloaded packages and package lists.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / leftover).glob("*"):
                    if item.is_file():
                        item.unlink()
            partial = work / "base.tar"
            # /dev, /proc and /sys are the container runtime's to provide
            excludes = ["--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*"]
            _run(
                ["tar", "-C", str(rootfs), "--numeric-owner", *excludes, "-cf", str(partial), "."],
                "tar",
            )
            partial.rename(tarball)
        finally:
            _unmount_below(work)
            shutil.rmtree(work, ignore_errors=True)
    return tarball


def _unmount_below(directory: Path) -> None:
    """debootstrap mounts /proc (and more) inside the root it builds; a failed run may leave
    them mounted, and nothing below a mount point may be deleted."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    inside = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{directory}/")]
    for point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def base_image(client: docker.DockerClient) -> str:
    """The base imported into the engine; returns its reference."""
    tarball = base_tarball()
    reference = f"nelson-test-base:{tarball.stem.rsplit('-', 1)[-1]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(reference)
        return reference
    repository, _, tag = reference.partition(":")
    with tarball.open("rb") as data:
        client.api.import_image_from_data(
            data, repository=repository, tag=tag, changes=['CMD ["/bin/bash"]']
        )
    client.images.get(reference)
    return reference


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    build = project["build-system"]["requires"]
    return sorted([*project["project"]["dependencies"], *build, "wheel"])


def wheelhouse() -> Path:
    """Wheels of the project's dependencies (and its build backend) for the base's Python."""
    requirements = _requirements()
    key = _key(requirements, BASE_PYTHON, PLATFORMS)
    directory = cache_dir() / f"wheels-{key}"
    with _locked(directory.name):
        if directory.exists():
            return directory
        partial = Path(tempfile.mkdtemp(prefix="nelson-wheels-", dir=cache_dir()))
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        try:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--only-binary=:all:",
                    "--python-version",
                    BASE_PYTHON,
                    *platforms,
                    "--dest",
                    str(partial),
                    *requirements,
                ],
                "pip download",
            )
            partial.rename(directory)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return directory


def build_context(into: Path, wheels: Path) -> Path:
    """The build context: the project's sources and ./wheelhouse."""
    into.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    shutil.copytree(wheels, into / "wheelhouse")
    return into


def build_image(
    client: docker.DockerClient, base: str, wheels: Path, tag: str, work: Path
) -> tuple[str, float]:
    """Build the Dockerfile (classic builder, RUN steps on the host network, which nothing in
    the build uses: pip is told to use the wheelhouse only). Returns (image id, seconds)."""
    context = build_context(work / "context", wheels)
    started = time.monotonic()
    log: list[str] = []
    try:
        image, output = client.images.build(
            path=str(context),
            tag=tag,
            buildargs={
                "BASE": base,
                "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": "/src/wheelhouse",
            },
            network_mode="host",
            rm=True,
            forcerm=True,
        )
        log.extend(str(line.get("stream", "")) for line in output)
    except docker.errors.BuildError as exc:
        text = "".join(str(line.get("stream", line.get("error", ""))) for line in exc.build_log)
        raise ImageUnavailable(f"docker build failed: {exc.msg}\n{text[-5000:]}") from None
    return str(image.id), time.monotonic() - started


if __name__ == "__main__":
    started = time.monotonic()
    print(base_tarball(), f"{time.monotonic() - started:.0f} s")
    started = time.monotonic()
    print(wheelhouse(), f"{time.monotonic() - started:.0f} s")
