"""Deploy throughput: N deploys asked by slash command, driven by the product's own engine and
store, with progress threads posted to a rate-limited fake Slack workspace.

    .venv/bin/python bench/throughput.py [--deploys 1000] [--backend sqlite|postgres]
        [--rate 100] [--latency 0.05] [--healthy-after 2] [--max-concurrent 200] [--units 250]

The bot is built by bot.bootstrap.build and served by bot.slack.serve.serve (HTTP mode) in this
process; only the registry and the datacenters' schedulers are replaced, after the build, by the
doubles in bench/doubles.py: `--latency` seconds per call, instances healthy `--healthy-after`
seconds after launch. Slack is tests/fakes/slack.py with its default limits (chat.postMessage
10 per second per channel, chat.update Tier 3, views.publish Tier 4). Commands are sent at
`--rate` per second (open loop) as `deploy <unit> <version> to dc-east in dev`, spread over
`--units` units (deploys of one unit to one target run one after another, by design).

Prints: sustained deploys per second (from the first command to the last `ready`; goal >= 5/s),
the CPU seconds this process and the database server spent per deploy, and the SQL statements
and transactions per deploy (on a shared machine these say more than wall time),
p50/p99 of command-to-ready minus the latency the doubles inject on a deploy's path, peak RSS
of this process (bot + fake Slack + client) and the most workflows in flight (goal <= 300 MB
with 200 in flight), Slack Web API calls per deploy (counted until the outbox has told every
thread, `--drain` seconds at most after the last `ready`, and how long that took), and how many
calls Slack answered 429 (goal 0). The fake Slack shares this process and its CPU, so figures
are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import event
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.clock import SystemClock  # noqa: E402
from bench.cpu import database_cpu  # noqa: E402
from bench.doubles import MemoryRouter, SlowRegistry, SlowScheduler  # noqa: E402
from bench.slack_ack import percentile, resident_mb  # noqa: E402
from bot.bootstrap import Application, build  # noqa: E402
from bot.slack.serve import serve  # noqa: E402
from commands.events import Event, StackProgress  # noqa: E402
from commands.settings import Settings  # noqa: E402
from domain.states import StackStatus  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.slack_requests import encode_form, sign, slash_command  # noqa: E402

SECRET = "0123456789abcdef0123456789abcdef"
DATACENTER = "dc-east"


def manifest(units: range, channel: str) -> str:
    """One manifest with these units, each deployable to dev, notifications to `channel`."""
    lines = ["units:"]
    for i in units:
        lines += [
            f"  - name: svc{i}",
            "    description: a benchmark unit",
            "    ports:",
            "      - default->8080/http",
        ]
    lines += [
        "plans:",
        "  - name: default",
        "    health_checks:",
        "      - name: alive",
        "        port_reference: default",
        "        protocol: http",
        "        path: /",
        "namespaces:",
        "  - name: dev",
        "    units:",
    ]
    for i in units:
        lines += [f"      - ref: svc{i}", "        plans: [default]"]
    lines += ["notifications:", "  slack:", f"    - channel: {channel}", ""]
    return "\n".join(lines)


def team_channels(teams: int) -> dict[str, str]:
    return {f"C{100 + k}": f"team{k}" for k in range(teams)}


def channel_of(unit: int, teams: int) -> str:
    return f"C{100 + unit % teams}"


def bench_settings(
    fake: FakeSlack,
    work: Path,
    database_url: str,
    units: int,
    max_concurrent: int,
    teams: int = 1,
) -> Settings:
    """Units svc0.. split among `teams` manifests, unit i notifying channel_of(i, teams)."""
    for k in range(teams):
        repo = work / "manifests" / f"team{k}"
        repo.mkdir(parents=True, exist_ok=True)
        text = manifest(range(k, units, teams), f"C{100 + k}")
        (repo / ".nelson.yml").write_text(text, encoding="utf-8")
    return Settings.model_validate(
        {
            "database_url": database_url,
            "namespaces": ["dev"],
            "manifest_dirs": [str(work / "manifests")],
            "datacenters": {
                DATACENTER: {
                    "staging_registry": "127.0.0.1:5000",
                    "runtime_registry": "127.0.0.1:5001",
                    "router": {"kind": "haproxy", "address": str(work / "haproxy")},
                }
            },
            "access": {
                "admins": [],
                "rules": [{"namespace": "*", "view": ["*"], "deploy": ["U1"], "approve": ["U1"]}],
            },
            "workflow": {"max_concurrent": max_concurrent, "health_interval": "1s"},
            # a second version's traffic shift starts when it is ready (slack_ack --busy)
            "approvals": {"dev": {"needed": False}},
            "slack": {
                "bot_token": fake.bot_token,
                "signing_secret": SECRET,
                "api_url": fake.base_url,
            },
        }
    )


@dataclass
class Doubles:
    registry: SlowRegistry
    scheduler: SlowScheduler
    router: MemoryRouter

    def calls(self) -> int:
        return sum(sum(d.calls.values()) for d in (self.registry, self.scheduler, self.router))


async def with_doubles(
    settings: Settings, latency: float, healthy_after: float
) -> tuple[Application, Doubles]:
    """The application exactly as `nelson serve` builds it, then the registry, scheduler and
    router of the one datacenter swapped for the doubles."""
    application = await build(settings, clock=SystemClock())
    doubles = Doubles(
        SlowRegistry(latency),
        SlowScheduler(DATACENTER, latency, healthy_after),
        MemoryRouter(latency, application.store, DATACENTER),
    )
    for scheduler in application.schedulers.values():
        await scheduler.close()
    for router in application.routers.values():
        await router.close()
    if application.registry is not None:
        await application.registry.close()
    schedulers: dict[str, Any] = {DATACENTER: doubles.scheduler}
    routers: dict[str, Any] = {DATACENTER: doubles.router}
    application.registry = doubles.registry
    application.schedulers, application.routers = dict(schedulers), dict(routers)
    assert application.deploys is not None and application.traffic is not None
    assert application.lifecycle is not None
    application.deploys.registry = doubles.registry
    application.deploys.schedulers = dict(schedulers)
    application.traffic.schedulers, application.traffic.routers = dict(schedulers), dict(routers)
    application.lifecycle.schedulers = dict(schedulers)
    application.lifecycle.routers = dict(routers)
    return application, doubles


@contextlib.asynccontextmanager
async def running_bot(application: Application, port: int) -> AsyncIterator[str]:
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(application, host="127.0.0.1", port=port, ready=ready, stop=stop)
    )
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    if not ready.is_set():
        raise SystemExit("the bot did not start within 30 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await application.close()


@contextlib.contextmanager
def database(backend: str, work: Path) -> Any:
    if backend == "postgres":
        from tests.pgserver import fresh_database, postgres_server

        with postgres_server() as admin:
            yield fresh_database(admin)
    else:
        yield f"sqlite:///{work / 'nelson.db'}"


async def post_command(
    session: aiohttp.ClientSession, url: str, fake: FakeSlack, text: str, channel: str
) -> bool:
    """The slash command typed in `channel` (the team's channel, where its threads go)."""
    form = slash_command(
        text,
        response_url=fake.new_response_url(),
        channel_id=channel,
        channel_name=fake.channels[channel],
    )
    body = encode_form(form)
    headers = {**sign(SECRET, body), "Content-Type": "application/x-www-form-urlencoded"}
    try:
        async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
            await response.read()
            return response.status == 200
    except aiohttp.ClientError:
        return False


class Statements:
    """SQL statements and committed transactions, counted on every engine of this process."""

    def __init__(self) -> None:
        self.statements = self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)

    def _statement(self, *_args: Any) -> None:
        self.statements += 1

    def _commit(self, *_args: Any) -> None:
        self.commits += 1


async def told_everything(application: Application, since: float, limit: float) -> float | None:
    """Seconds from `since` until the outbox holds nothing left to tell; None after `limit`."""
    until = time.monotonic() + limit
    while time.monotonic() < until:
        if not await application.store.outbox_backlog():
            return time.perf_counter() - since
        await asyncio.sleep(0.5)
    return None


async def run(args: argparse.Namespace) -> None:
    from bench.slack_ack import free_port

    counted = Statements()

    pid = os.getpid()
    async with FakeSlack(channels=team_channels(args.teams)) as fake:
        with (
            tempfile.TemporaryDirectory(prefix="nelson-bench-") as folder,
            database(args.backend, Path(folder)) as url,
        ):
            work = Path(folder)
            settings = bench_settings(fake, work, url, args.units, args.max_concurrent, args.teams)
            application, doubles = await with_doubles(settings, args.latency, args.healthy_after)
            sent: dict[tuple[str, str], float] = {}
            done_at: dict[tuple[str, str], float] = {}
            failed: list[str] = []
            finished = asyncio.Event()

            first_event: dict[int, float] = {}
            started: dict[tuple[str, str], float] = {}

            async def on_event(event: Event) -> None:
                if not isinstance(event, StackProgress):
                    return
                first_event.setdefault(event.stack_id, time.perf_counter())
                if event.status is StackStatus.READY or event.failed:
                    now = time.perf_counter()
                    stack = await application.store.stack_by_id(event.stack_id)
                    assert stack is not None
                    if event.failed:
                        failed.append(f"{stack.name}: {event.message}")
                    else:
                        done_at[(stack.unit, str(stack.version))] = now
                        started[(stack.unit, str(stack.version))] = first_event[stack.id]
                    if len(done_at) + len(failed) >= args.deploys:
                        finished.set()

            application.events.subscribe(on_event)
            peak = {"rss": 0.0, "in_flight": 0, "rss_at_peak_flight": 0.0}

            async def sample() -> None:
                while True:
                    rss = resident_mb(pid)
                    flight = len(sent) - len(done_at) - len(failed)
                    peak["rss"] = max(peak["rss"], rss)
                    if flight >= peak["in_flight"]:
                        peak["in_flight"] = flight
                        peak["rss_at_peak_flight"] = max(peak["rss_at_peak_flight"], rss)
                    await asyncio.sleep(0.1)

            async with (
                running_bot(application, free_port()) as bot_url,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            ):
                slack_before, doubles_before = len(fake.calls), doubles.calls()
                sql_before = (counted.statements, counted.commits)
                cpu_before = (sum(os.times()[:2]), database_cpu(url))
                sampler = asyncio.create_task(sample())
                rejected = 0
                start = time.perf_counter()
                posts = []
                for i in range(args.deploys):
                    due = start + i / args.rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    unit, version = f"svc{i % args.units}", f"1.0.{i // args.units}"
                    sent[(unit, version)] = time.perf_counter()
                    text = f"deploy {unit} {version} to {DATACENTER} in dev"
                    channel = channel_of(i % args.units, args.teams)
                    posts.append(
                        asyncio.create_task(post_command(session, bot_url, fake, text, channel))
                    )
                rejected = sum(1 for ok in await asyncio.gather(*posts) if not ok)
                # a command the bot could not take never ends: stop once nothing moved for
                # `--stall` seconds
                deadline, last, moved = time.monotonic() + args.timeout, -1, time.monotonic()
                while not finished.is_set() and time.monotonic() < deadline:
                    if len(done_at) + len(failed) != last:
                        last, moved = len(done_at) + len(failed), time.monotonic()
                    elif time.monotonic() - moved > args.stall:
                        print(f"  nothing finished for {args.stall:g} s: stopped waiting")
                        break
                    await asyncio.sleep(0.5)
                end = max(done_at.values(), default=time.perf_counter())
                cpu = (sum(os.times()[:2]) - cpu_before[0], database_cpu(url) - cpu_before[1])
                sql = (counted.statements - sql_before[0], counted.commits - sql_before[1])
                slack_at_ready = len(fake.calls) - slack_before
                double_calls = doubles.calls() - doubles_before
                # Slack's limits (a post per second per channel, chat.update Tier 3) may leave
                # threads behind the deploys: wait until the outbox has told everything
                caught_up = await told_everything(application, end, args.drain)
                await asyncio.sleep(3)  # the last progress updates reach Slack
                sampler.cancel()
                slack_calls = len(fake.calls) - slack_before
                updates = sum(1 for c in fake.calls[slack_before:] if c.method == "chat.update")

            # On a deploy's path the doubles wait: check (when the command is taken), resolve,
            # replicate, launch, and the health probe that finds it healthy, plus the time
            # to healthy itself.
            injected = 5 * args.latency + args.healthy_after
            beyond = [(done_at[k] - sent[k] - injected) * 1000 for k in done_at]
            elapsed = end - start
            to_start = [(started[k] - sent[k]) * 1000 for k in done_at]
            print(
                f"{args.deploys} deploys on {args.backend}, sent at {args.rate:g}/s, "
                f"max_concurrent {args.max_concurrent}, {args.units} units in {args.teams} "
                f"team channel(s); doubles: {args.latency * 1000:g} ms per call, "
                f"healthy {args.healthy_after:g} s after launch"
            )
            print(f"  ready {len(done_at)}, failed {len(failed)}, commands not acked {rejected}")
            for line in failed[:5]:
                print(f"    {line}")
            print(
                f"  sustained: {len(done_at) / elapsed:.1f} deploys/s "
                f"({len(done_at)} ready in {elapsed:.1f} s from the first command; goal >= 5/s)"
            )
            if beyond:
                print(
                    f"  command to ready beyond the injected {injected:.2f} s: "
                    f"p50 {percentile(beyond, 50):.0f} ms, p99 {percentile(beyond, 99):.0f} ms, "
                    f"mean {statistics.mean(beyond):.0f} ms"
                )
                print(
                    f"    of which command to the workflow's first step: p50 "
                    f"{percentile(to_start, 50):.0f} ms, p99 {percentile(to_start, 99):.0f} ms"
                )
            finished_count = max(len(done_at) + len(failed), 1)
            print(
                f"  CPU {cpu[0]:.1f} s in this process + {cpu[1]:.1f} s in the database server: "
                f"{(cpu[0] + cpu[1]) / finished_count * 1000:.0f} ms per deploy; SQL "
                f"{sql[0] / finished_count:.0f} statements and {sql[1] / finished_count:.0f} "
                "transactions committed per deploy (commands, workflows and listeners)"
            )
            print(
                f"  peak RSS {peak['rss']:.0f} MB; most workflows in flight "
                f"{peak['in_flight']} (RSS then {peak['rss_at_peak_flight']:.0f} MB; "
                "goal <= 300 MB with 200)"
            )
            limited = dict(fake.ratelimited)
            told = (
                f"every thread told {caught_up:.1f} s after the last ready"
                if caught_up is not None
                else f"threads still behind {args.drain:g} s after the last ready"
            )
            print(
                f"  Slack Web API calls: {slack_calls} ({slack_calls / args.deploys:.1f} per "
                f"deploy, {updates} of them chat.update; {slack_at_ready} by the last ready); "
                f"{told}; 429 answers: {sum(limited.values())} {limited or ''} (goal 0)"
            )
            print(
                f"  registry/scheduler calls: {double_calls} "
                f"({double_calls / args.deploys:.1f} per deploy)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rate", type=float, default=100.0, help="commands per second")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per double call")
    parser.add_argument("--healthy-after", type=float, default=2.0, help="seconds after launch")
    parser.add_argument("--max-concurrent", type=int, default=200)
    parser.add_argument("--units", type=int, default=250)
    parser.add_argument(
        "--teams", type=int, default=1, help="manifests, each notifying its own channel"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--stall", type=float, default=300.0)
    parser.add_argument(
        "--drain", type=float, default=300.0, help="seconds to wait for Slack threads to catch up"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
