"""Which processes drive shifts and cleanups right now.

`nelson serve` (with or without Slack) and `nelson console` write a heartbeat to the Store
every `HEARTBEAT`; a one-shot `nelson run` reads them to say truthfully what will move a
traffic shift, or that nothing will until a daemon starts."""

from __future__ import annotations

from datetime import datetime, timedelta

from commands.ports import Clock
from commands.repositories import TrafficRepository
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


def roster(found: list[Daemon], now: datetime) -> str:
    """One line naming the processes alive and when each last reported."""
    if not found:
        return "Processes: none is running (`nelson serve` drives deploys, shifts and cleanups)."
    parts = [
        f"{d.kind} on {d.holder} (seen {max(0, round((now - d.seen_at).total_seconds()))} s ago)"
        for d in sorted(found, key=lambda d: d.holder)
    ]
    return f"Processes alive ({len(found)}): " + "; ".join(parts) + "."
