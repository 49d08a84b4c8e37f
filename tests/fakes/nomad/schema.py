"""Request and response bodies checked against Nomad's published OpenAPI document.

The document gives types and shapes (a `Count` is an integer, `TaskGroups` a list of task
groups); Nomad's own rules on top of them (a job needs an ID and datacenters, a task a
driver) are in `rules.py`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DOCUMENT = Path(__file__).with_name("openapi.yaml")


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with DOCUMENT.open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = yaml.load(stream, Loader=loader)
    return loaded


@functools.lru_cache(maxsize=64)
def _validator(name: str) -> jsonschema.protocols.Validator:
    root = document()
    if name not in root["components"]["schemas"]:
        raise KeyError(f"the OpenAPI document has no schema {name}")
    # The whole document is the root, so the schemas' #/components/schemas/... refs resolve.
    schema = {**root, "$ref": f"#/components/schemas/{name}"}
    return jsonschema.Draft4Validator(schema)


def without_nulls(value: Any) -> Any:
    """Nomad decodes JSON into Go structs, where null is the zero value: drop nulls first."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def problems(name: str, body: Any) -> list[str]:
    """What in `body` does not fit the schema `name`, each as `path: message`."""
    found = []
    for error in sorted(_validator(name).iter_errors(without_nulls(body)), key=str):
        path = ".".join(str(p) for p in error.absolute_path) or "(body)"
        found.append(f"{path}: {error.message}")
    return found


def operation(method: str, path: str) -> dict[str, Any]:
    """The document's operation for `method` on a templated `path` (`/job/{jobName}`)."""
    op: dict[str, Any] = document()["paths"][path][method.lower()]
    return op


def request_schema(method: str, path: str) -> str | None:
    body = operation(method, path).get("requestBody")
    if body is None:
        return None
    ref: str = body["content"]["application/json"]["schema"]["$ref"]
    return ref.rpartition("/")[2]


def response_schema(method: str, path: str, status: str = "200") -> dict[str, Any] | None:
    """The JSON schema of a response (refs into the document left to resolve)."""
    response = operation(method, path)["responses"].get(status)
    if response is None:
        return None
    if "$ref" in response:
        response = document()["components"]["responses"][response["$ref"].rpartition("/")[2]]
    content = response.get("content", {}).get("application/json")
    return None if content is None else dict(content["schema"])


def response_problems(method: str, path: str, body: Any, status: str = "200") -> list[str]:
    schema = response_schema(method, path, status)
    if schema is None:
        return [f"the document describes no JSON body for {method} {path} {status}"]
    validator = jsonschema.Draft4Validator({**document(), **schema})
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in validator.iter_errors(without_nulls(body))
    ]
