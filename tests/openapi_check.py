"""Checking the bot's HTTP answers against its OpenAPI document (bot/http/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from bot.http.api import OPENAPI

DOCUMENT: dict[str, Any] = json.loads(OPENAPI.read_text(encoding="utf-8"))
_URI = "urn:nelson:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(_URI, DRAFT202012.create_resource(DOCUMENT))


def check_response(template: str, method: str, status: int, content_type: str, body: Any) -> None:
    """The answer to `method template` is one the document lists, with that schema."""
    operation = DOCUMENT["paths"][template][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}, not documented"
    media = content_type.split(";")[0].strip()
    content = responses[str(status)]["content"]
    assert media in content, f"{method} {template} {status} answered {media}"
    pointer = json.dumps(content[media]["schema"])
    schema = json.loads(pointer.replace('"#/', f'"{_URI}#/'))
    Draft202012Validator(schema, registry=REGISTRY).validate(body)
