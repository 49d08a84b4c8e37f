"""Image promotion between two registries: our OCI copy next to `skopeo copy` and
`docker pull` + `tag` + `push`, in one run, on the same generated image.

    .venv/bin/python bench/promotion.py [--layers 5] [--layer-mb 40]

Starts a Docker engine and four Docker registries on loopback (tests/dockerworld.py), pushes
a generated image (uncompressed random layers, so nothing is cheaper to move than it looks)
to the staging registry, then promotes it to a fresh runtime registry per tool, and once more
with our copy to show that a second promotion of the same image moves nothing.
Target: ours at most 1.2x skopeo's wall time."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.registry import OciRegistry
from tests.dockerworld import docker_engine, registry

LAYER = "application/vnd.oci.image.layer.v1.tar"


def layer(index: int, size: int) -> bytes:
    data = os.urandom(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(f"data/layer-{index}.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def push_image(registry_address: str, repository: str, tag: str, layers: list[bytes]) -> str:
    base = f"http://{registry_address}/v2/{repository}"
    async with aiohttp.ClientSession() as session:

        async def upload(blob: bytes) -> str:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            async with session.post(f"{base}/blobs/uploads/") as start:
                location = start.headers["Location"]
            location = (
                location if location.startswith("http") else f"http://{registry_address}{location}"
            )
            sep = "&" if "?" in location else "?"
            async with session.put(f"{location}{sep}digest={digest}", data=blob) as done:
                assert done.status == 201, await done.text()
            return digest

        diff_ids = [await upload(blob) for blob in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        config_digest = await upload(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": LAYER, "digest": d, "size": len(b)}
                    for d, b in zip(diff_ids, layers, strict=True)
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        async with session.put(f"{base}/manifests/{tag}", data=manifest, headers=headers) as put:
            assert put.status == 201, await put.text()
        return "sha256:" + hashlib.sha256(manifest).hexdigest()


def timed(label: str, results: dict[str, float], fn) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    results[label] = time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-mb", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed: apt-get install skopeo")
    layers = [layer(i, args.layer_mb * 1024 * 1024) for i in range(args.layers)]
    total_mb = sum(len(b) for b in layers) / 1024 / 1024
    with ExitStack() as stack:
        address = stack.enter_context(docker_engine())
        staging = stack.enter_context(registry())
        image = f"{staging}/big:1.0.0"
        digest = await push_image(staging, "big", "1.0.0", layers)
        client = docker.DockerClient(base_url=address, version="1.41", timeout=600)
        times: dict[str, list[float]] = {"ours": [], "skopeo": [], "docker": [], "ours again": []}
        for _ in range(args.rounds):
            ours_to = stack.enter_context(registry())
            skopeo_to = stack.enter_context(registry())
            docker_to = stack.enter_context(registry())
            copier = OciRegistry()
            started = time.perf_counter()
            await copier.replicate(image, digest, ours_to)
            times["ours"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await copier.replicate(image, digest, ours_to)
            times["ours again"].append(time.perf_counter() - started)
            await copier.close()
            started = time.perf_counter()
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                    f"docker://{image}",
                    f"docker://{skopeo_to}/big:1.0.0",
                ],
                check=True,
            )
            times["skopeo"].append(time.perf_counter() - started)
            started = time.perf_counter()
            client.images.pull(f"{staging}/big", tag="1.0.0")
            client.images.get(image).tag(f"{docker_to}/big", "1.0.0")
            for line in client.images.push(
                f"{docker_to}/big", tag="1.0.0", stream=True, decode=True
            ):
                if "error" in line:
                    raise SystemExit(line["error"])
            times["docker"].append(time.perf_counter() - started)
            client.images.remove(image, force=True)
            client.images.remove(f"{docker_to}/big:1.0.0", force=True)
        client.close()
    print(f"promotion of a {args.layers}-layer image ({total_mb:.0f} MB), best of {args.rounds}:")
    best = {name: min(values) for name, values in times.items()}
    for name, value in best.items():
        print(f"  {name:11s} {value * 1000:8.0f} ms")
    print(f"  ours / skopeo: {best['ours'] / best['skopeo']:.2f} (target <= 1.2)")


if __name__ == "__main__":
    asyncio.run(main())
