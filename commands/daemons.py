"""Which processes drive deploys, shifts and cleanups right now.

`nelson serve` (with or without Slack) and `nelson console` write a heartbeat to the Store
every `HEARTBEAT`; a one-shot `nelson run` reads them to say truthfully what will move a
traffic shift, or that nothing will until a daemon starts. `datacenters` and the Slack Home
tab list the replicas alive, with the deploys each holds: a process's heartbeat is named like
its workflow claims' holder (`host:pid:random`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from commands.ports import Clock
from commands.repositories import TrafficRepository, WorkflowClaimRepository
from domain.records import Daemon

HEARTBEAT = timedelta(seconds=10)
# three beats missed: the process is gone (or so stuck that it drives nothing)
ALIVE_WITHIN = HEARTBEAT * 3


async def running(store: TrafficRepository, clock: Clock) -> list[Daemon]:
    return await store.daemons(clock.now() - ALIVE_WITHIN)


def drivers_note(daemons: list[Daemon], every: timedelta) -> str:
    """One sentence: who moves the weights, or that nobody does."""
    if not daemons:
        return (
            "no `nelson serve` or `nelson console` is running, so nothing moves until one "
            "starts (`nelson serve --no-slack` runs without Slack); it then continues from "
            "where the weights are"
        )
    daemon = daemons[0]
    seconds = every.total_seconds()
    return f"{daemon.kind} on {daemon.holder} moves it every {seconds:g} s"


@dataclass(frozen=True, slots=True)
class Replica:
    """One process alive, as its heartbeat and its workflow claims tell."""

    kind: str
    host: str
    pid: str
    started_at: datetime
    seen_at: datetime
    deploys_held: int  # unfinished deploys whose workflow claim it holds, unexpired


class Roster(TrafficRepository, WorkflowClaimRepository, Protocol):
    """What `replicas` reads."""


async def replicas(store: Roster, clock: Clock) -> list[Replica]:
    """The processes alive, oldest first, each with the number of deploys it drives."""
    now = clock.now()
    alive = await store.daemons(now - ALIVE_WITHIN)
    held = Counter(c.holder for c in await store.workflow_claims(unexpired_at=now))
    found = []
    for daemon in alive:
        host, pid = _host_and_pid(daemon.holder)
        found.append(
            Replica(daemon.kind, host, pid, daemon.started_at, daemon.seen_at, held[daemon.holder])
        )
    return found


def _host_and_pid(holder: str) -> tuple[str, str]:
    parts = holder.split(":")
    if len(parts) >= 3:  # host:pid:random
        return ":".join(parts[:-2]), parts[-2]
    return holder, "?"


def takeover_note(claim_ttl: timedelta) -> str:
    """When a process stops heartbeating, and when its deploys move on."""
    ttl = claim_ttl.total_seconds()
    return (
        f"A process silent for {ALIVE_WITHIN.total_seconds():g} s is gone; the deploys it "
        f"held are taken over by another within {ttl + ttl / 3:g} s of its death "
        "(`workflow.claim_ttl` and a third)."
    )


def since(at: datetime, now: datetime) -> str:
    seconds = max(0, round((now - at).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"
