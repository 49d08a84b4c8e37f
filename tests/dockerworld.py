"""A Docker engine and Docker registries on loopback, for tests and benchmarks.

`docker_engine()` starts `dockerd` (Debian `docker.io`) with its own socket and data root,
no iptables and no bridge (containers use the host network), unless NELSON_TEST_DOCKER_HOST
names a running engine. `registry()` starts a `docker-registry` (Debian) on 127.0.0.1 with a
throwaway storage directory. `busybox_image()` makes an image locally from the Debian
`busybox-static` binary (`docker import`): nothing is pulled from the internet."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker

BUSYBOX = Path("/bin/busybox")


class DockerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise DockerUnavailable(
            f"{binary} is not installed: `apt-get install {package}` (scripts/test does it)"
        )
    return path


def _wait(check: object, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise DockerUnavailable(f"{what} did not start within {timeout:.0f} s:\n{tail}")


# overlay2 shares layers between images and containers; vfs copies the whole filesystem for
# every layer and container (minutes per build step of a Python image), but runs anywhere.
STORAGE_DRIVERS = ("overlay2", "vfs")


def _start_dockerd(dockerd: str, root: Path, driver: str) -> subprocess.Popen[bytes]:
    address = f"unix://{root / 'docker.sock'}"
    return subprocess.Popen(
        [
            dockerd,
            "--host",
            address,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--storage-driver={driver}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / f"dockerd-{driver}.log").open("wb"),
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def docker_engine() -> Iterator[str]:
    """Yield the engine's address (unix:///…/docker.sock): overlay2 storage where the
    filesystem allows it, vfs otherwise."""
    existing = os.environ.get("NELSON_TEST_DOCKER_HOST")
    if existing:
        yield existing
        return
    dockerd = _need("dockerd", "docker.io")
    root = Path(tempfile.mkdtemp(prefix="nelson-dockerd-"))
    address = f"unix://{root / 'docker.sock'}"
    client = docker.DockerClient(base_url=address, timeout=10, version="1.41")
    process: subprocess.Popen[bytes] | None = None
    try:
        for driver in STORAGE_DRIVERS:
            process = _start_dockerd(dockerd, root, driver)
            log = root / f"dockerd-{driver}.log"
            try:
                _wait(lambda p=process: p.poll() is None and client.ping(), "dockerd", log)
                break
            except DockerUnavailable:
                if driver == STORAGE_DRIVERS[-1]:
                    raise
                _stop(process)  # this filesystem cannot hold overlay2: try the next driver
                shutil.rmtree(root / "data", ignore_errors=True)
        yield address
    finally:
        with contextlib.suppress(Exception):
            for container in client.containers.list(all=True):
                container.remove(force=True)
        client.close()
        if process is not None:
            _stop(process)
        for line in Path("/proc/mounts").read_text().splitlines():
            point = line.split()[1]
            if point.startswith(f"{root}/"):  # left by a dockerd that did not stop cleanly
                subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def registry(port: int | None = None, *, auth: str = "") -> Iterator[str]:
    """Yield the registry's address (127.0.0.1:PORT). `auth` is an `auth:` section of the
    registry configuration (htpasswd or token), indented by two spaces."""
    binary = _need("docker-registry", "docker-registry")
    root = Path(tempfile.mkdtemp(prefix="nelson-registry-"))
    port = port or free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + (f"auth:\n{auth}" if auth else ""),
        encoding="utf-8",
    )
    log = root / "registry.log"
    process = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )

    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return process.poll() is None

    try:
        _wait(up, "docker-registry", log)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


def busybox_rootfs(files: dict[str, str] | None = None) -> bytes:
    """A tarball: /bin/busybox (static), /bin/sh, and `files` (path -> text)."""
    if not BUSYBOX.exists():
        raise DockerUnavailable("busybox-static is not installed: `apt-get install busybox-static`")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "www"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), "bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        for path, text in (files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


HTTPD = 'CMD ["/bin/sh", "-c", "exec /bin/busybox httpd -f -p ${PORT:-8080} -h /www"]'


def busybox_image(
    client: docker.DockerClient, reference: str, body: str, *, start_delay: float = 0
) -> str:
    """Import an image serving `body` at / (busybox httpd on $PORT, after `start_delay`
    seconds), tag it `reference` and push it to the registry the reference names."""
    repository, _, tag = reference.rpartition(":")
    rootfs = busybox_rootfs({"www/index.html": body})
    command = HTTPD
    if start_delay:
        command = command.replace(
            '"exec /bin/busybox httpd', f'"sleep {start_delay}; exec /bin/busybox httpd'
        )
    client.api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=[command])
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise DockerUnavailable(f"pushing {reference} failed: {line['error']}")
    return str(client.images.get(reference).id)
