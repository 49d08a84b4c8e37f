"""The one gate every deploy, commit, redeploy and traffic shift start passes: refused while a
lock or freeze (stored, or a scheduled window of the configuration) holds the target, naming
who, why and until when. An emergency deploy (admins only, with a reason) goes through, is
audited as such, and announced (`EmergencyDeploy`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from commands.access import Principal, Role, authorize
from commands.events import EmergencyDeploy, EventHub
from commands.ports import Clock, Store
from commands.replies import AccessDenied, UserError
from commands.settings import FreezeWindow, Settings
from domain.locks import WINDOW, Lock, holding, window_end
from domain.records import AuditEvent, Stack

EMERGENCY_STACK = "emergency-stack"  # audit action: a stack an emergency deploy made
EMERGENCY_HINT = (
    "An admin may deploy anyway with `deploy ... emergency because <reason>`; "
    "`locks` lists every lock and freeze."
)


class Held(UserError):
    """Refused because a lock or freeze holds the target."""


def scheduled(settings: Settings, now: datetime) -> list[Lock]:
    """The configured freeze windows open at `now`, as locks that end when they close."""
    found = []
    for index, window in enumerate(settings.freezes):
        end = _end(window, now)
        if end is None:
            continue
        for datacenter in window.datacenters or (None,):
            found.append(
                Lock(
                    id=0,
                    kind=WINDOW,
                    unit=None,
                    namespace=window.namespace,
                    datacenter=datacenter,
                    reason=window.reason,
                    created_by=f"freezes[{index}] of the configuration",
                    created_at=now,
                    until=end,
                )
            )
    return found


def _end(window: FreezeWindow, now: datetime) -> datetime | None:
    return window_end(
        window.days, FreezeWindow.minutes(window.start), FreezeWindow.minutes(window.end), now
    )


class Gate:
    def __init__(self, settings: Settings, store: Store, clock: Clock, events: EventHub) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.events = events

    async def in_force(self) -> list[Lock]:
        """Every lock and freeze active now, scheduled windows included."""
        now = self.clock.now()
        stored = [lock for lock in await self.store.locks() if lock.active(now)]
        return stored + scheduled(self.settings, now)

    async def holding(self, unit: str, namespace: str, datacenter: str | None) -> list[Lock]:
        return holding(await self.in_force(), unit, namespace, datacenter, self.clock.now())

    async def holding_stack(self, stack: Stack) -> list[Lock]:
        """What holds the traffic shift to `stack`: nothing for a stack an emergency deploy
        made (its shift is part of the emergency), else what holds its unit there."""
        for event in await self.store.audit_events(target=stack.name, limit=5000):
            if event.action == EMERGENCY_STACK and event.allowed:  # its first entries
                return []
        return await self.holding(stack.unit, stack.namespace, stack.datacenter)

    async def mark_emergency(self, emergency: EmergencyDeploy, stacks: Sequence[Stack]) -> None:
        """Remember, per stack, that an emergency deploy made it (in the audit)."""
        for stack in stacks:
            await self.store.audit(
                AuditEvent(
                    emergency.actor,
                    EMERGENCY_STACK,
                    stack.name,
                    True,
                    f"because {emergency.reason}",
                    self.clock.now(),
                )
            )

    async def check(
        self,
        who: Principal,
        action: str,
        what: str,
        unit: str,
        targets: Sequence[tuple[str, str]],  # (datacenter, namespace)
        *,
        emergency: bool = False,
        reason: str = "",
        channels: Sequence[str] = (),
        asked_in: str | None = None,
    ) -> EmergencyDeploy | None:
        """Refuse `action` of `what` while anything holds a target. An emergency passes: the
        announcement to publish (`announce`) once the work is under way is returned."""
        now = self.clock.now()
        locks = await self.in_force()
        held: list[Lock] = []
        for datacenter, namespace in dict.fromkeys(targets):
            for lock in holding(locks, unit, namespace, datacenter, now):
                if lock not in held:
                    held.append(lock)
        lines = tuple(lock.describe(now) for lock in held)
        if emergency:
            return await self._emergency(
                who, action, what, targets, reason, lines, channels, asked_in
            )
        if not held:
            return None
        await self.store.audit(
            AuditEvent(who.user_id, action, what, False, "held: " + "; ".join(lines), now)
        )
        raise Held(
            f"cannot {action} {what} now: {lines[0]}"
            + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
            + ".",
            EMERGENCY_HINT if action == "deploy" else "`locks` lists every lock and freeze.",
            details=lines[1:],
        )

    async def _emergency(
        self,
        who: Principal,
        action: str,
        what: str,
        targets: Sequence[tuple[str, str]],
        reason: str,
        lines: tuple[str, ...],
        channels: Sequence[str],
        asked_in: str | None,
    ) -> EmergencyDeploy:
        now = self.clock.now()
        if not reason.strip():
            raise UserError(
                "an emergency deploy needs a reason.",
                "Say why at the end: `deploy ... emergency because <reason>`.",
            )
        refused = [
            decision
            for decision in (
                authorize(self.settings.access, who, Role.ADMIN, namespace)
                for namespace in sorted({ns for _, ns in targets})
            )
            if not decision.allowed
        ]
        overriding = "; overriding " + "; ".join(lines) if lines else "; nothing was held"
        await self.store.audit(
            AuditEvent(
                who.user_id,
                f"emergency-{action}",
                what,
                not refused,
                (refused[0].reason if refused else f"because {reason}{overriding}"),
                now,
            )
        )
        if refused:
            raise AccessDenied(
                f"{who.label} may not deploy in an emergency: only admins may "
                f"({refused[0].reason}).",
                "Nothing was changed.",
            )
        return EmergencyDeploy(
            actor=who.user_id,
            what=what,
            reason=reason,
            overridden=lines,
            channels=tuple(channels),
            asked_in=asked_in,
            at=now,
        )

    async def announce(self, emergency: EmergencyDeploy | None) -> None:
        if emergency is not None:
            await self.events.publish(emergency)
