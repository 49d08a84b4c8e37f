"""What Slack sends to the bot in HTTP mode, built and signed as Slack does it:
`X-Slack-Signature = "v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + raw_body))`.

Slash commands arrive as form fields, interactive payloads as a form field `payload=<json>`,
Events API envelopes as a JSON body. The same dicts serve as Socket Mode envelope payloads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

VERIFICATION_TOKEN = "verification-token-unused"  # deprecated by Slack; Bolt ignores it
APP_ID = "A0001"


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """`X-Slack-Request-Timestamp` and `X-Slack-Signature` for `body` (now, unless given)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def retry_headers(num: int, reason: str = "http_timeout") -> dict[str, str]:
    """Headers Slack adds when it redelivers an event (`num` is 1, 2 or 3)."""
    return {"X-Slack-Retry-Num": str(num), "X-Slack-Retry-Reason": reason}


def _trigger_id() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"


def _now_ts() -> str:
    return f"{time.time():.6f}"


def slash_command(
    text: str,
    *,
    response_url: str,
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    channel_name: str = "deploys",
    team_id: str = "T0001",
    trigger_id: str | None = None,
    command: str = "/nelson",
) -> dict[str, str]:
    """The form fields of a slash command invocation."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": "fake-workspace",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }


def block_action(
    action_id: str,
    value: str,
    *,
    message_ts: str,
    response_url: str,
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    channel_name: str = "deploys",
    block_id: str = "b",
    team_id: str = "T0001",
    message: dict[str, Any] | None = None,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """The `block_actions` payload of a button click on the message `message_ts`.
    `message` (the clicked message as Slack shows it) defaults to a bare bot message;
    `trigger_id` (for opening a modal) should come from `FakeSlack.issue_trigger`."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": "fake-workspace"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": message
        or {"type": "message", "ts": message_ts, "text": "", "user": "UBOT", "bot_id": "B0001"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "type": "button",
                "action_ts": _now_ts(),
            }
        ],
    }


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    team_id: str = "T0001",
    api_app_id: str = APP_ID,
) -> dict[str, Any]:
    """The Events API envelope around `event` (`event_id` generated unless given)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": "UBOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def app_mention(
    text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None
) -> dict[str, Any]:
    """An `app_mention` event; `text` should contain `<@UBOT>` as Slack writes mentions."""
    stamp = ts or _now_ts()
    return {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": stamp,
        "channel": channel,
        "event_ts": stamp,
    }


def direct_message(
    text: str, *, user: str = "U1", channel: str = "D1", ts: str | None = None
) -> dict[str, Any]:
    """A `message` event in the bot's DM (`channel_type: "im"`)."""
    stamp = ts or _now_ts()
    return {
        "type": "message",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": stamp,
        "channel": channel,
        "event_ts": stamp,
    }


def app_home_opened(user: str = "U1") -> dict[str, Any]:
    """The `app_home_opened` event for the Home tab."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D1",
        "tab": "home",
        "event_ts": _now_ts(),
    }


def encode_form(fields: Mapping[str, str]) -> bytes:
    """A slash command body (`application/x-www-form-urlencoded`)."""
    return urlencode(fields).encode()


def encode_interactive(payload: dict[str, Any]) -> bytes:
    """An interactive body: the form field `payload` holding the JSON payload."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def encode_event(envelope: dict[str, Any]) -> bytes:
    """An Events API body (`application/json`)."""
    return json.dumps(envelope).encode()


@dataclass(frozen=True)
class Answer:
    """What the bot answered to a signed request."""

    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    content_type: str,
    signing_secret: str,
    *,
    timestamp: int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Answer:
    """POST `body` signed with `signing_secret`; `extra_headers` may override the signature."""
    headers = {"Content-Type": content_type, **sign(signing_secret, body, timestamp)}
    headers.update(extra_headers or {})
    async with session.post(url, data=body, headers=headers) as response:
        return Answer(response.status, await response.text(), dict(response.headers))


def view_submission(
    view: dict[str, Any],
    *,
    user_id: str = "U1",
    user_name: str = "alice",
    values: dict[str, dict[str, str]] | None = None,
    team_id: str = "T0001",
) -> dict[str, Any]:
    """The `view_submission` payload Slack sends when `user_id` submits the modal `view` (as
    views.open answered it); `values` are what they typed, per input block and action:
    `{block_id: {action_id: text}}`."""
    state = {
        block: {
            action: {"type": "plain_text_input", "value": text} for action, text in inputs.items()
        }
        for block, inputs in (values or {}).items()
    }
    submitted = {k: v for k, v in view.items() if k != "user_id"}
    submitted["state"] = {"values": state}
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "fake-workspace"},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": _trigger_id(),
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
