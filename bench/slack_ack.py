"""Slash-command ack latency of the running bot (HTTP mode) next to a bare Bolt app that only
acks, both under the same load, in one run.

    .venv/bin/python bench/slack_ack.py [--rate 100] [--seconds 20] [--command "datacenters"]

Both servers run as their own processes against the fake Slack workspace (Web API and
response_url), on loopback. Requests are signed exactly as Slack signs them and sent at
`--rate` per second to each server, interleaved. The bot does the full work after each ack
(identity lookup, parsing, access check, audit row in SQLite, the answer to response_url).
Target: bot p99 under 50 ms and within 1.5x of bare Bolt. `--busy` measures the same while the
bot runs deploys and traffic shifts (bench/slack_ack_busy.py). Also prints the resident memory of
both servers after start, before any request (target for the bot: at most 120 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.slack_requests import encode_form, sign, slash_command  # noqa: E402

SECRET = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"{url} exited with {process.returncode}")
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not become healthy")


def resident_mb(pid: int) -> float:
    """The process's resident memory now (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s to each server")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--command", default="datacenters")
    from bench.slack_ack_busy import add_arguments, busy

    add_arguments(parser)
    args = parser.parse_args()
    if args.busy:
        await busy(args)
        return

    async with FakeSlack(rate_limits={"chat.postMessage": (10**6, 1.0)}) as fake:
        work = Path(tempfile.mkdtemp(prefix="nelson-bench-"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NELSON_", "SLACK_"))},
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.base_url,
            "NELSON_DATABASE_URL": f"sqlite:///{work / 'nelson.db'}",
            "PYTHONPATH": str(ROOT),
        }
        ports = {"nelson": free_port(), "bare bolt": free_port()}
        commands = {
            "nelson": [
                sys.executable,
                "-m",
                "bot.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["nelson"]),
            ],
            "bare bolt": [
                sys.executable,
                str(ROOT / "bench" / "bare_bolt.py"),
                str(ports["bare bolt"]),
            ],
        }
        processes = {
            name: subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(work / f"{name.replace(' ', '_')}.log", "wb"),  # noqa: SIM115 - lives as long as the server
            )
            for name, cmd in commands.items()
        }
        try:
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            for name, url in urls.items():
                await wait_healthy(url, processes[name])
            await asyncio.sleep(3)  # started and answering; nothing asked of it yet
            idle = {name: resident_mb(processes[name].pid) for name in urls}
            latencies: dict[str, list[float]] = {name: [] for name in urls}
            failures: dict[str, int] = {name: 0 for name in urls}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(name: str) -> None:
                    body = encode_form(
                        slash_command(args.command, response_url=fake.new_response_url())
                    )
                    headers = {
                        **sign(SECRET, body),
                        "Content-Type": "application/x-www-form-urlencoded",
                    }
                    started = time.perf_counter()
                    try:
                        async with session.post(
                            f"{urls[name]}/slack/events", data=body, headers=headers
                        ) as response:
                            await response.read()
                            ok = response.status == 200
                    except aiohttp.ClientError:
                        ok = False
                    elapsed = (time.perf_counter() - started) * 1000
                    if ok:
                        latencies[name].append(elapsed)
                    else:
                        failures[name] += 1

                # warm up both (first request runs auth.test, imports, DB connections)
                for name in urls:
                    for _ in range(20):
                        await one(name)
                latencies = {name: [] for name in urls}
                tasks = []
                interval = 1.0 / args.rate
                total = int(args.rate * args.seconds)
                start = time.perf_counter()
                for i in range(total):
                    due = start + i * interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    for name in urls:
                        tasks.append(asyncio.create_task(one(name)))
                await asyncio.gather(*tasks)
            answered = sum(1 for r in fake.responses.values() if r)
            print(
                f"{total} slash commands to each server at {args.rate:g}/s "
                f"({args.seconds:g} s), command '{args.command}'"
            )
            results = {}
            for name, values in latencies.items():
                p50, p99 = percentile(values, 50), percentile(values, 99)
                results[name] = p99
                print(
                    f"  {name:10s} ack p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                    f"max {max(values):6.1f} ms  mean {statistics.mean(values):6.1f} ms  "
                    f"failed {failures[name]}"
                )
            print(f"  nelson answered {answered} commands through response_url")
            ratio = results["nelson"] / results["bare bolt"]
            print(f"  p99 ratio nelson / bare bolt: {ratio:.2f} (target <= 1.5; p99 < 50 ms)")
            print(
                f"  idle RSS after start: nelson serve {idle['nelson']:.0f} MB, bare Bolt "
                f"{idle['bare bolt']:.0f} MB (target <= 120 MB)"
            )
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:  # still answering a backlog: stop it
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    asyncio.run(main())
