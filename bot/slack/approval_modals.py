"""Approve and Reject, confirmed: a click opens a modal that restates what the decision is
about (the request, the stack and its version, the versions a shift moves between, where,
who asked, the votes so far), with a reason field for Reject. Submitting it builds the typed
`approve <id>` / `reject <id> <reason>` and runs it through the same handler as the text.

Who may not decide is told at the click, without a modal; a request no longer pending says
how it ended. Nothing is decided before the submission."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.bootstrap import Application
from bot.outage import UNREACHABLE, is_outage
from bot.outage import describe as describe_outage
from bot.slack.blocks import clip, context, escape, section
from bot.slack.directory import Directory
from bot.slack.guard import first_action, text_at
from bot.slack.messages import APPROVE_ACTION, REJECT_ACTION, button_value, who
from bot.slack.outbox import Outbox, PostFailed
from commands import model
from commands.approval_desk import APPROVE, REJECT, describe
from commands.grammar import canonical
from domain.approvals import ApprovalStatus
from domain.records import Approval, AuditEvent

log = logging.getLogger("nelson.slack.modals")

CALLBACK = "approval.confirm"
REASON_BLOCK, REASON_ACTION = "reason", "text"


async def confirmation(
    application: Application, approval: Approval, decision: str
) -> dict[str, Any]:
    """The modal: what is decided, restated from the Store."""
    verb = "Approve" if decision == APPROVE else "Reject"
    lines = [f"*{escape(approval.summary)}*"]
    if approval.stack_id is not None:
        stack = await application.store.stack_by_id(approval.stack_id)
        if stack is not None:
            lines.append(
                f"Stack: `{escape(stack.name)}`, {escape(stack.unit)} {stack.version} "
                f"({stack.status.value})"
            )
    lines += [f"• {escape(d)}" for d in approval.details]
    lines.append(
        f"Datacenter `{escape(approval.datacenter)}`, namespace `{escape(approval.namespace)}`"
    )
    blocks: list[dict[str, Any]] = [
        section("\n".join(lines)),
        context(
            f"asked by {who(approval.requested_by)} · {len(approval.approvers)} of "
            f"{approval.required} approvals so far"
        ),
    ]
    if decision == REJECT:
        blocks.append(
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Why reject it?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION,
                    "multiline": True,
                    "max_length": 500,
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": CALLBACK,
        "private_metadata": json.dumps({"approval": approval.id, "decision": decision}),
        "title": {"type": "plain_text", "text": clip(f"{verb} #{approval.id}?", 24)},
        "submit": {"type": "plain_text", "text": verb},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


class ApprovalModals:
    def __init__(
        self,
        application: Application,
        outbox: Outbox,
        directory: Directory,
        refresh: Any,  # async (Approval, user, from_home: bool) -> None
    ) -> None:
        self.application = application
        self.outbox = outbox
        self.directory = directory
        self.refresh = refresh

    async def on_click(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        try:
            await self._clicked(body)
        except Exception as exc:
            await self._failed(body, exc)

    async def _failed(self, body: dict[str, Any], exc: Exception) -> None:
        """Whatever went wrong, the person hears it in one line: the database being down
        as such, anything else as a fault with a reference they can quote."""
        if is_outage(exc):
            log.warning("answered with 'database unreachable': %s", describe_outage(exc))
            text = UNREACHABLE
        else:
            reference = secrets.token_hex(4)
            log.exception("internal error %s on an approval click or confirmation", reference)
            text = f"Something went wrong on my side (reference {reference})."
        channel = text_at(body, "container", "channel_id") or text_at(body, "channel", "id")
        if not channel:
            try:
                meta = json.loads(text_at(body, "view", "private_metadata") or "{}")
                channel = str(meta.get("channel") or "") if isinstance(meta, dict) else ""
            except ValueError:
                channel = ""
        await self._tell(channel, text_at(body, "user", "id"), text, None)

    async def _clicked(self, body: dict[str, Any]) -> None:
        user = text_at(body, "user", "id")
        channel = text_at(body, "container", "channel_id") or text_at(body, "channel", "id")
        thread = text_at(body, "message", "thread_ts") or None
        action = text_at(first_action(body), "action_id")
        decision = APPROVE if action == APPROVE_ACTION else REJECT
        approval_id = button_value(body)
        approval = (
            await self.application.store.approval(approval_id) if approval_id is not None else None
        )
        if approval is None:
            await self._tell(channel, user, "There is no such approval.", thread)
            return
        if approval.status is not ApprovalStatus.PENDING:
            await self._tell(channel, user, f"#{approval.id} is {describe(approval)}.", thread)
            return
        principal = await self.directory.principal(user)
        refusal = self.application.desk.refusal(approval, principal)
        if refusal is not None:
            # refused at the click, and audited as a refused decision would be
            await self.application.store.audit(
                AuditEvent(
                    principal.user_id,
                    decision,
                    f"approval:{approval.id}",
                    False,
                    refusal,
                    self.application.clock.now(),
                )
            )
            text = f":no_entry: {principal.label} may not {decision} #{approval.id}: {refusal}."
            await self._tell(channel, user, text, thread)
            return
        view = await confirmation(self.application, approval, decision)
        meta = json.loads(view["private_metadata"])
        meta.update(channel=channel, thread=thread or "")
        view["private_metadata"] = json.dumps(meta)
        try:
            await self.outbox.client.views_open(trigger_id=text_at(body, "trigger_id"), view=view)
        except SlackApiError as exc:
            log.warning("could not open the confirmation: %s", exc.response.get("error"))
            await self._tell(
                channel,
                user,
                f"I could not open the confirmation; `{decision} {approval.id}` does the same.",
                thread,
            )

    async def on_submit(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()  # the modal closes; the answer comes where the button was
        try:
            await self._submitted(body)
        except Exception as exc:
            await self._failed(body, exc)

    async def _submitted(self, body: dict[str, Any]) -> None:
        user = text_at(body, "user", "id")
        try:
            meta = json.loads(text_at(body, "view", "private_metadata") or "{}")
        except ValueError:
            meta = {}
        approval_id = meta.get("approval") if isinstance(meta, dict) else None
        if not isinstance(approval_id, int) or isinstance(approval_id, bool):
            return
        channel = str(meta.get("channel") or "")
        thread = str(meta.get("thread") or "") or None
        command: model.Command
        if meta.get("decision") == REJECT:
            reason = text_at(body, "view", "state", "values", REASON_BLOCK, REASON_ACTION, "value")
            command = model.Reject(approval_id, " ".join(reason.split()))
        else:
            command = model.Approve(approval_id)
        principal = await self.directory.principal(user)
        answer = await self.application.conversation.answer(
            canonical(command), principal, channel=channel or None
        )
        reply = answer.reply
        said = " ".join([reply.title, *(getattr(b, "text", "") for b in reply.blocks)]).strip()
        await self._tell(channel, user, said if reply.ok else f":no_entry: {said}", thread)
        approval = await self.application.store.approval(approval_id)
        if approval is not None:
            await self.refresh(approval, user, not channel)

    async def _tell(self, channel: str, user: str, text: str, thread: str | None) -> None:
        if not channel:  # from the Home tab: the tab shows the outcome
            return
        try:
            await self.outbox.ephemeral(
                channel, user, text, [section(escape(text))], thread_ts=thread
            )
        except PostFailed as exc:
            log.warning("could not tell %s in %s: %s", user, channel, exc.error)


def register(
    app: AsyncApp, application: Application, outbox: Outbox, directory: Directory, refresh: Any
) -> ApprovalModals:
    modals = ApprovalModals(application, outbox, directory, refresh)
    app.action(APPROVE_ACTION)(modals.on_click)
    app.action(REJECT_ACTION)(modals.on_click)
    app.view(CALLBACK)(modals.on_submit)
    return modals
