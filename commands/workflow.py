"""The workflow port's implementation for datacenters whose kind has no deployment engine.

It accepts nothing: every deploy is refused up front with the reason, so nothing is recorded
that would then sit in `pending` forever."""

from __future__ import annotations

from collections.abc import Sequence

from commands.settings import Settings


class NoEngine:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def available_for(self, datacenter: str) -> str | None:
        dc = self._settings.datacenters.get(datacenter)
        if dc is None:
            return f"datacenter '{datacenter}' is not configured"
        return f"this version has no deployment engine for '{dc.scheduler.kind}' schedulers"

    async def submit(self, stack_ids: Sequence[int]) -> None:
        raise RuntimeError("no deployment engine accepts stacks; available_for() said so first")
