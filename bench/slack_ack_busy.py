"""`bench/slack_ack.py --busy`: slash-command ack latency while the same process runs deploys
and traffic shifts, next to a bare Bolt app under the same request load in the same run.

The bot is built as `nelson serve` builds it and served in this process (HTTP mode), with the
registry, scheduler and router doubles of bench/doubles.py (bench/throughput.py wires them).
Not timed: `--shifts` units get a first version, then a second one; each second version, when
ready, starts a traffic shift from the first (dev needs no approval here), which then moves
weights every `traffic.step_interval` for 10 minutes. Then, timed: `--deploys` deploys of
other units are asked at once while slash commands go at `--rate` per second to both servers
for `--seconds`. The bot shares its process with the fake Slack and the load generator; bare
Bolt runs in its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.slack_ack import SECRET, free_port, percentile, wait_healthy
from bench.throughput import (
    DATACENTER,
    bench_settings,
    channel_of,
    post_command,
    running_bot,
    team_channels,
    with_doubles,
)
from commands.events import Event, StackProgress
from domain.states import StackStatus
from tests.fakes.slack import FakeSlack

ROOT = Path(__file__).resolve().parents[1]
TEAMS = 25


async def busy(args: argparse.Namespace) -> None:
    units = args.shifts + args.deploys
    teams = min(TEAMS, units)
    async with FakeSlack(channels=team_channels(TEAMS)) as fake:
        with tempfile.TemporaryDirectory(prefix="nelson-bench-") as folder:
            work = Path(folder)
            settings = bench_settings(
                fake, work, f"sqlite:///{work / 'nelson.db'}", units, 200, teams
            )
            application, doubles = await with_doubles(settings, args.latency, args.healthy_after)
            ready: set[int] = set()
            shifting = 0

            async def on_event(event: Event) -> None:
                nonlocal shifting
                if isinstance(event, StackProgress):
                    if event.status is StackStatus.READY or event.failed:
                        ready.add(event.stack_id)
                    if event.message.startswith("traffic: ") and "shifting from" in event.message:
                        shifting += 1

            application.events.subscribe(on_event)
            port = free_port()
            bare = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "bare_bolt.py"), str(port)],
                env={
                    **os.environ,
                    "SLACK_BOT_TOKEN": fake.bot_token,
                    "SLACK_SIGNING_SECRET": SECRET,
                    "SLACK_API_URL": fake.base_url,
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                urls = {"bare bolt": f"http://127.0.0.1:{port}"}
                async with (
                    running_bot(application, free_port()) as bot_url,
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
                ):
                    urls["nelson"] = bot_url
                    await wait_healthy(urls["bare bolt"], bare)

                    async def deploy(unit: int, version: str) -> None:
                        text = f"deploy svc{unit} {version} to {DATACENTER} in dev"
                        await post_command(session, bot_url, fake, text, channel_of(unit, teams))

                    async def settle(count: int) -> None:
                        deadline = time.monotonic() + 900
                        while len(ready) < count and time.monotonic() < deadline:
                            await asyncio.sleep(0.5)

                    # not timed: the versions shifts move traffic from, then the versions
                    # they move it to (each starts its shift when ready; shifts last 10 min)
                    await asyncio.gather(*(deploy(u, "1.0.0") for u in range(args.shifts)))
                    await settle(args.shifts)
                    await asyncio.gather(*(deploy(u, "1.0.1") for u in range(args.shifts)))
                    await settle(2 * args.shifts)
                    shifts_before = shifting
                    latencies: dict[str, list[float]] = {name: [] for name in urls}
                    failures = dict.fromkeys(urls, 0)

                    async def one(name: str) -> None:
                        started = time.perf_counter()
                        ok = await post_command(session, urls[name], fake, "datacenters", "C100")
                        if ok:
                            latencies[name].append((time.perf_counter() - started) * 1000)
                        else:
                            failures[name] += 1

                    for name in urls:  # warm up both
                        for _ in range(20):
                            await one(name)
                    latencies = {name: [] for name in urls}
                    background = asyncio.gather(
                        *(deploy(u, "1.0.0") for u in range(args.shifts, units))
                    )
                    tasks = []
                    total = int(args.rate * args.seconds)
                    start = time.perf_counter()
                    for i in range(total):
                        delay = start + i / args.rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        for name in urls:
                            tasks.append(asyncio.create_task(one(name)))
                    await asyncio.gather(*tasks)
                    await background
                    in_shift = shifting
                    deployed = len(ready) - 2 * args.shifts
            finally:
                bare.terminate()
                bare.wait(10)
            print(
                f"{total} slash commands to each server at {args.rate:g}/s ({args.seconds:g} s) "
                f"while the bot runs {args.deploys} deploys ({deployed} ready during the run) and "
                f"{in_shift} traffic shifts ({shifts_before} started before it); doubles: "
                f"{args.latency * 1000:g} ms per call, "
                f"healthy {args.healthy_after:g} s after launch"
            )
            results = {}
            for name, values in latencies.items():
                p50, p99 = percentile(values, 50), percentile(values, 99)
                results[name] = p99
                print(
                    f"  {name:10s} ack p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                    f"max {max(values):6.1f} ms  failed {failures[name]}"
                )
            ratio = results["nelson"] / results["bare bolt"]
            print(f"  p99 ratio nelson / bare bolt: {ratio:.2f} (goal <= 1.5; p99 <= 50 ms)")
            print(f"  registry/scheduler/router calls: {doubles.calls()}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--busy", action="store_true", help="deploys and shifts in the bot")
    parser.add_argument("--deploys", type=int, default=50)
    parser.add_argument("--shifts", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--healthy-after", type=float, default=2.0)
