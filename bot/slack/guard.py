"""What an HTTP request must be before Bolt sees it, and safe reading of what Slack sent.

`check_signature` verifies Slack's signature over the raw bytes before anything is decoded
or parsed: a malformed timestamp or signature is refused like a wrong one (401). Bolt then
verifies the signature again and refuses a timestamp older than five minutes. `parse_body`
decodes and parses the signed body once, strictly (UTF-8, no duplicate fields, a JSON
object at the top) and checks the shapes the listeners rely on; anything else is a 400.
`text_at` reads a field without trusting the shape, for Socket Mode payloads, which do not
pass through here."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

TIMESTAMP = re.compile(r"[0-9]{1,12}")  # seconds since 1970; 12 digits reach the year 33658
SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
FORM = "application/x-www-form-urlencoded"
# Headers Bolt reads to run deferred ("lazy") listeners; only Bolt itself may set them.
BOLT_INTERNAL = "x-slack-bolt-"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str  # one line for the log; never echoes the request


def check_signature(secret: str, headers: Mapping[str, str], raw: bytes) -> Refusal | None:
    """None when `raw` carries Slack's signature for `secret`."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not TIMESTAMP.fullmatch(timestamp):
        return Refusal(401, "missing or malformed X-Slack-Request-Timestamp")
    if not SIGNATURE.fullmatch(signature):
        return Refusal(401, "missing or malformed X-Slack-Signature")
    base = b"v0:" + timestamp.encode("ascii") + b":" + raw
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return Refusal(401, "the signature does not match the body")
    return None


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.lower().startswith(BOLT_INTERNAL)}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return Refusal(400, "the body is not valid JSON (or nests too deeply)")


def parse_body(raw: bytes, content_type: str) -> dict[str, Any] | Refusal:
    """The request's fields as Bolt's listeners will see them, or why they cannot be."""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    charset = params.partition("charset=")[2].strip().strip('"').lower()
    if charset and charset not in ("utf-8", "utf8"):
        return Refusal(400, "the body is not UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(400, "the body is not UTF-8")
    if not text:
        return Refusal(400, "the body is empty")
    # The same choice Bolt makes: JSON when declared so or when it looks like it.
    if mime == "application/json" or text.startswith("{"):
        body = _json(text)
    else:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return Refusal(400, "a form field is not UTF-8")
        fields = dict(pairs)
        if len(fields) != len(pairs):
            return Refusal(400, "a form field is repeated")
        body = _json(fields["payload"]) if "payload" in fields else fields
    if isinstance(body, Refusal):
        return body
    if not isinstance(body, dict):
        return Refusal(400, "the body is not an object")
    problem = shape_problem(body)
    return Refusal(400, problem) if problem else body


_STRINGS = (str,)
_EVENT_STRINGS = ("type", "user", "channel", "text", "ts", "thread_ts", "channel_type", "tab")


def _wrong(value: Any, kind: type | tuple[type, ...]) -> bool:
    return value is not None and not isinstance(value, kind)


def shape_problem(body: dict[str, Any]) -> str:
    """What in a parsed body would mislead a listener ('' when nothing)."""
    if _wrong(body.get("type"), _STRINGS):
        return "'type' is not a string"
    if "event" in body:
        event = body["event"]
        if not isinstance(event, dict):
            return "'event' is not an object"
        for key in _EVENT_STRINGS:
            if _wrong(event.get(key), _STRINGS):
                return f"'event.{key}' is not a string"
    for key in ("user", "container", "channel", "message", "view", "team"):
        if _wrong(body.get(key), dict):
            return f"'{key}' is not an object"
    if isinstance(body.get("user"), dict) and _wrong(body["user"].get("id"), _STRINGS):
        return "'user.id' is not a string"
    if body.get("type") == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            return "'actions' is not a list of actions"
        for action in actions:
            if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
                return "an action has no 'action_id'"
            if _wrong(action.get("value"), _STRINGS):
                return "an action's 'value' is not a string"
    return ""


def text_at(body: Any, *path: str) -> str:
    """The string at `path` inside `body`, or '' when any step is missing or of another kind."""
    value = body
    for key in path:
        if not isinstance(value, dict):
            return ""
        value = value.get(key)
    return value if isinstance(value, str) else ""


def first_action(body: Any) -> dict[str, Any]:
    actions = body.get("actions") if isinstance(body, dict) else None
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return actions[0]
    return {}
