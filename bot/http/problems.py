"""Errors as RFC 9457 problem details: `application/problem+json` with type, title, status
and detail. Every refusal of the API and the webhooks is one of these."""

from __future__ import annotations

from typing import Any

from aiohttp import web

MEDIA_TYPE = "application/problem+json"

# type URI suffix -> title; docs/api.md lists them
TITLES = {
    "bad-request": "The request is not valid",
    "unauthorized": "A valid API token is needed",
    "forbidden": "The token may not do this",
    "not-found": "No such thing",
    "method-not-allowed": "Method not allowed",
    "too-large": "The request body is too large",
    "unsupported-media-type": "The body must be JSON",
    "unprocessable": "The request cannot be carried out",
    "conflict": "Not possible now",
    "internal": "Internal error",
    "unavailable": "The database is unreachable",
    "disabled": "This endpoint is disabled",
}


def problem(
    kind: str,
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"urn:nelson:problem:{kind}",
        "title": TITLES[kind],
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v not in (None, (), [])})
    return web.json_response(body, status=status, content_type=MEDIA_TYPE, headers=headers)
