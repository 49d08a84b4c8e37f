"""Approval requests and decisions, whatever the front end (buttons or `approve <id>`).

The rule for a namespace comes from the configuration (`approvals.<namespace>`, inherited by
nested namespaces): how many approvals, who may approve, whether the requester may approve
their own request, and the deadline. Every state change is in the Store, so a restart loses
nothing and any replica can take the next click."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from commands.access import Principal, Role, authorize
from commands.events import (
    ApprovalDecided,
    ApprovalReminder,
    ApprovalRequested,
    ApprovalVoted,
    EventHub,
)
from commands.gate import Gate, Held
from commands.ports import Clock, Store
from commands.replies import AccessDenied, UserError
from commands.repositories import ApprovalRepository
from commands.settings import Settings
from domain.approvals import ApprovalKind, ApprovalStatus, Decision
from domain.records import Approval, AuditEvent, NewApproval

APPROVE = Decision.APPROVE
REJECT = Decision.REJECT
# a pending request its stored votes approve, left so this long, was left by a process that died
STUCK_AFTER = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Outcome:
    approval: Approval
    message: str  # for the person who acted
    counted: bool  # False: a repeat (double click) that changed nothing


class ApprovalDesk:
    def __init__(self, settings: Settings, store: Store, events: EventHub, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self._enough_since: dict[int, datetime] = {}  # pending with votes enough: seen since

    async def request(
        self,
        kind: ApprovalKind,
        *,
        namespace: str,
        datacenter: str,
        summary: str,
        requested_by: str,
        stack_id: int | None = None,
        details: tuple[str, ...] = (),
    ) -> Approval | None:
        """Open a request, or None when the namespace's rule needs no approval."""
        _, rule = self.settings.approval_rule(namespace)
        if not rule.needed:
            return None
        now = self.clock.now()
        new = NewApproval(
            kind=kind,
            stack_id=stack_id,
            namespace=namespace,
            datacenter=datacenter,
            summary=summary,
            requested_by=requested_by,
            required=rule.required,
            deadline=now + rule.deadline,
            details=details,
        )
        async with self.store.unit_of_work() as uow:  # the request, its audit and its message
            approval = await uow.create_approval(new, at=now)
            await self._audit("nelson", "request-approval", approval, True, summary, uow)
            await self.events.record(ApprovalRequested(approval), uow)
        await self.events.publish(ApprovalRequested(approval), recorded=True)
        return approval

    def refusal(self, approval: Approval, who: Principal) -> str | None:
        """Why `who` may not decide `approval`, or None when they may."""
        name, rule = self.settings.approval_rule(approval.namespace)
        access = authorize(self.settings.access, who, Role.APPROVE, approval.namespace)
        if not access.allowed:
            return access.reason
        if rule.approvers and not any(who.matches(entry) for entry in rule.approvers):
            return f"{name}.approvers lists only {', '.join(rule.approvers)}"
        if who.user_id == approval.requested_by and not rule.allow_self_approval:
            return (
                f"{who.label} asked for it and {name} needs someone else to decide "
                "(allow_self_approval is off)"
            )
        return None

    async def decide(
        self, approval_id: int, who: Principal, decision: Decision, reason: str = ""
    ) -> Outcome:
        """`reason` (a rejection's) is kept with the approval and in the audit."""
        approval = await self.store.approval(approval_id)
        if approval is None:
            raise UserError(f"there is no approval #{approval_id}.", "`approvals` lists open ones.")
        why_not = self.refusal(approval, who)
        await self._audit(who.user_id, decision, approval, why_not is None, why_not or "")
        if why_not is not None:
            raise AccessDenied(
                f"{who.label} may not {decision} #{approval.id}: {why_not}.",
                "Nothing was changed.",
            )
        if decision is APPROVE and approval.status is ApprovalStatus.PENDING:
            await self._check_not_held(approval, who)
        now = self.clock.now()
        if (
            approval.status is ApprovalStatus.PENDING
            and approval.deadline
            and approval.deadline <= now
        ):
            approval = (
                await self._close(approval, ApprovalStatus.EXPIRED, "nelson", now) or approval
            )
        if approval.status is not ApprovalStatus.PENDING:
            raise UserError(f"approval #{approval.id} is already {describe(approval)}.")
        counted = await self.store.vote(approval.id, who.user_id, decision, now)
        current = await self.store.approval(approval.id) or approval
        if not counted:
            # their vote was recorded before: if the process recording it died before closing
            # the request, the votes stored decide it now (the click was honoured once)
            if current.status is ApprovalStatus.PENDING and (
                who.user_id not in current.approvers  # they had rejected
                or len(current.approvers) >= current.required
            ):
                return await self._settle(current, who, now, reason)
            return Outcome(current, f"You had already voted on #{approval.id}.", False)
        if decision is APPROVE and len(current.approvers) < current.required:
            await self.events.publish(ApprovalVoted(current))  # the request shows the count
            return Outcome(
                current,
                f"Approval counted for #{approval.id} ({len(current.approvers)} of "
                f"{current.required}).",
                True,
            )
        return await self._settle(current, who, now, reason)

    async def _settle(
        self, approval: Approval, who: Principal, now: datetime, reason: str
    ) -> Outcome:
        """Close a request its stored votes decide: rejected when `who` voted against it
        (they are not among the approvers), else approved."""
        if who.user_id not in approval.approvers:
            closed = await self._close(approval, ApprovalStatus.REJECTED, who.user_id, now, reason)
            if closed is None:
                return await self._lost_race(approval.id)
            because = f" (reason: {reason})" if reason else ""
            return Outcome(closed, f"Rejected #{approval.id}: {approval.summary}{because}", True)
        closed = await self._close(approval, ApprovalStatus.APPROVED, who.user_id, now)
        if closed is None:
            return await self._lost_race(approval.id)
        return Outcome(closed, f"Approved #{approval.id}: {approval.summary}", True)

    async def _check_not_held(self, approval: Approval, who: Principal) -> None:
        """Approving a traffic shift starts it: not while a lock or freeze holds its stack."""
        if approval.kind is not ApprovalKind.TRAFFIC_SHIFT or approval.stack_id is None:
            return
        stack = await self.store.stack_by_id(approval.stack_id)
        if stack is None:
            return
        gate = Gate(self.settings, self.store, self.clock, self.events)
        held = await gate.holding_stack(stack)
        if held:
            why = held[0].describe(self.clock.now())
            await self._audit(who.user_id, APPROVE, approval, False, f"held: {why}")
            raise Held(
                f"#{approval.id} would start a traffic shift, and {why}.",
                "It stays pending: approve it once the lock or freeze is lifted.",
            )

    async def close_counted(self) -> list[Approval]:
        """Close the pending requests whose stored votes already approve them: the process
        that recorded the deciding vote died before closing (run by every replica's sweep).
        Only those found so by this desk for `STUCK_AFTER`: one being decided right now is
        left to the person deciding it, who hears the outcome."""
        now = self.clock.now()
        enough = {
            a.id: a
            for a in await self.store.approvals(ApprovalStatus.PENDING)
            if a.approvers and len(a.approvers) >= a.required
        }
        self._enough_since = {i: self._enough_since.get(i, now) for i in enough}
        stale = [a for i, a in enough.items() if now - self._enough_since[i] >= STUCK_AFTER]
        closed = []
        for approval in stale:
            by = approval.approvers[-1]
            done = await self._close(approval, ApprovalStatus.APPROVED, by, self.clock.now())
            if done is not None:
                closed.append(done)
        return closed

    async def expire_overdue(self) -> list[Approval]:
        """Close every pending request whose deadline passed; traffic stays where it is."""
        now = self.clock.now()
        expired = []
        for approval in await self.store.overdue_approvals(now):
            closed = await self._close(approval, ApprovalStatus.EXPIRED, "nelson", now)
            if closed is not None:
                expired.append(closed)
        return expired

    async def withdraw(
        self, approval_id: int, status: ApprovalStatus, reason: str = ""
    ) -> Approval | None:
        """Close a pending request nobody needs to decide any more (`superseded`, `void`):
        what it would approve changed; `reason` says what."""
        approval = await self.store.approval(approval_id)
        if approval is None or approval.status is not ApprovalStatus.PENDING:
            return None
        return await self._close(approval, status, "nelson", self.clock.now(), reason)

    async def void_for_stack(self, stack_id: int, reason: str) -> list[Approval]:
        """Void every pending request about this stack (it failed, was reversed or rolled
        back): approving it now would approve something else than what was asked."""
        voided = []
        for approval in await self.store.approvals(ApprovalStatus.PENDING):
            if approval.stack_id == stack_id:
                closed = await self.withdraw(approval.id, ApprovalStatus.VOID, reason)
                if closed is not None:
                    voided.append(closed)
        return voided

    async def remind_due(self) -> list[Approval]:
        """Pending requests within their rule's `remind_before` of the deadline, each told
        once (`ApprovalReminder`), whichever replica sweeps first."""
        now = self.clock.now()
        due = []
        for approval in await self.store.approvals(ApprovalStatus.PENDING):
            _, rule = self.settings.approval_rule(approval.namespace)
            if rule.remind_before is None or approval.deadline is None:
                continue
            if not approval.deadline - rule.remind_before <= now < approval.deadline:
                continue
            if await self.store.claim_delivery(f"approval-reminder:{approval.id}", now):
                await self.events.publish(ApprovalReminder(approval, rule.approvers))
                due.append(approval)
        return due

    async def _close(
        self,
        approval: Approval,
        status: ApprovalStatus,
        by: str,
        at: datetime,
        reason: str = "",
    ) -> Approval | None:
        async with self.store.unit_of_work() as uow:  # the decision and its audit event together
            closed = await uow.decide_approval(approval.id, status, by, at, reason)
            if closed is not None:
                detail = f"{approval.summary}; reason: {reason}" if reason else approval.summary
                await self._audit(by, status, closed, True, detail, uow)
                await self.events.record(ApprovalDecided(closed), uow)
        if closed is not None:
            await self.events.publish(ApprovalDecided(closed), recorded=True)
        return closed

    async def _lost_race(self, approval_id: int) -> Outcome:
        current = await self.store.approval(approval_id)
        assert current is not None
        return Outcome(current, f"#{approval_id} was {describe(current)} meanwhile.", False)

    async def _audit(
        self,
        actor: str,
        action: str,
        approval: Approval,
        allowed: bool,
        detail: str,
        store: ApprovalRepository | None = None,
    ) -> None:
        await (store or self.store).audit(
            AuditEvent(
                actor=actor,
                action=action,
                target=f"approval:{approval.id}",
                allowed=allowed,
                detail=detail,
                at=self.clock.now(),
            )
        )


def describe(approval: Approval) -> str:
    """`approved by U2`, `expired`, `pending (1 of 2)`."""
    if approval.status is ApprovalStatus.PENDING:
        return f"pending ({len(approval.approvers)} of {approval.required})"
    if approval.status is ApprovalStatus.EXPIRED or not approval.decided_by:
        return approval.status
    because = f" ({approval.reason})" if approval.reason else ""
    return f"{approval.status} by {approval.decided_by}{because}"
