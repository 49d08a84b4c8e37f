"""What Slack sends to the bot, built and signed exactly as Slack does it:
`X-Slack-Signature = "v0=" + hex(HMAC-SHA256(secret, "v0:" + timestamp + ":" + body))`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def retry_headers(num: int, reason: str = "http_timeout") -> dict[str, str]:
    return {"X-Slack-Retry-Num": str(num), "X-Slack-Retry-Reason": reason}


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
    return {
        "token": "verification-token-unused",
        "team_id": team_id,
        "team_domain": "fake",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": "A0001",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or f"{secrets.randbelow(10**10)}.{secrets.token_hex(6)}",
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
    block_id: str = "b",
    team_id: str = "T0001",
) -> dict[str, Any]:
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": "A0001",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": f"{secrets.randbelow(10**10)}.{secrets.token_hex(6)}",
        "team": {"id": team_id, "domain": "fake"},
        "channel": {"id": channel_id, "name": "deploys"},
        "message": {"type": "message", "ts": message_ts, "text": "", "user": "UBOT"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "type": "button",
                "action_ts": now,
            }
        ],
    }


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    team_id: str = "T0001",
    api_app_id: str = "A0001",
) -> dict[str, Any]:
    return {
        "token": "verification-token-unused",
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team_id, "user_id": "UBOT", "is_bot": True}],
    }


def _ts(ts: str | None) -> str:
    return ts or f"{time.time():.6f}"


def app_mention(
    text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None
) -> dict[str, Any]:
    stamp = _ts(ts)
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
    stamp = _ts(ts)
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
    return {"type": "app_home_opened", "user": user, "channel": "D1", "tab": "home"}


def encode_form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


def encode_interactive(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def encode_event(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()
