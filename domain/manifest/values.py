"""The shapes of single values in a manifest: names, URIs, addresses, blueprint references."""

from __future__ import annotations

import re

# Unit names become stack names and DNS labels: lower case, single hyphens.
UNIT_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")
UNIT_NAME_MAX = 40
# Plan, resource, health check and load balancer names: letters, digits and hyphens.
ALNUM_HYPHEN = re.compile(r"^[A-Za-z0-9-]+$")
META_MAX = 14
# Namespaces: lower-case words joined by hyphens, nested with slashes (dev, dev/sandbox).
NAMESPACE = re.compile(r"^[a-z][a-z/-]*[a-z]$")
LOADBALANCER_NAME_MAX = 12
PORT = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)->(\d+)/([a-z]+)$")
PORT_PROTOCOLS = ("http", "https", "tcp", "wss")
CHECK_PROTOCOLS = ("http", "https", "tcp")
DESTINATION = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])->([A-Za-z_][A-Za-z0-9_-]*)$")
DEPENDENCY = re.compile(r"^([^@]+)@(\d+)\.(\d+)$")
ENVIRONMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
WORKFLOWS = ("magnetar", "canopus", "pulsar")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# What may appear in a URI (RFC 3986): unreserved, reserved and percent-escapes.
_URI_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")
_USERINFO = re.compile(r"(//[^/@:]*):[^/@]*@")
_BLUEPRINT = re.compile(r"^([^@\s]+)(?:@(HEAD|head|\d+))?$")


def uri_problem(text: str) -> str | None:
    """Why `text` is not a URI, or None when it is one."""
    if not text.strip():
        return "it is empty"
    if any(c.isspace() for c in text):
        return "it holds spaces"
    if not _URI_CHARS.match(text):
        bad = next(
            (c for c in text if c != "%" and not _URI_CHARS.match(c)),
            "%",
        )
        return f"'{bad}' may not appear in a URI (escape it as %XX)"
    if text.count("#") > 1:
        return "it has more than one '#'"
    scheme = _SCHEME.match(text)
    if scheme is not None and len(text) == len(scheme.group(0)):
        return f"nothing follows '{scheme.group(0)}'"
    return None


def without_password(uri: str) -> str:
    """The URI as it may be shown: a password in it is replaced by ***."""
    return _USERINFO.sub(r"\1:***@", uri)


def blueprint_problem(text: str) -> str | None:
    if _BLUEPRINT.match(text) is None:
        return (
            f"'{text}' is not a blueprint reference; write name or name@revision, "
            "with a revision number or HEAD, like nomad-service@3"
        )
    return None


def snake_case(name: str) -> str:
    """How alert and rule names are compared: `HighLatency`, `high latency` and
    `high_latency` are one name."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", spaced)
    return re.sub(r"[\s_]+", "_", spaced).lower()
