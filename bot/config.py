"""Loading the configuration: a TOML or YAML file, then the environment on top.

Every key can be set from the environment as `NELSON_<KEY>` with `__` between levels, e.g.
`NELSON_WORKFLOW__MAX_CONCURRENT=8` or `NELSON_DATACENTERS__DC_EAST__RUNTIME_REGISTRY=...`.
Values are read as JSON when they parse as JSON (numbers, lists, booleans), else as text.
A few well-known names are accepted too: NELSON_DATABASE_URL and the SLACK_* variables.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from commands.settings import Settings

DEFAULT_FILE = Path(__file__).parent / "defaults" / "nelson.toml"
_ALIASES = {
    "NELSON_DATABASE_URL": ("database_url",),
    "SLACK_BOT_TOKEN": ("slack", "bot_token"),
    "SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "SLACK_APP_TOKEN": ("slack", "app_token"),
    "SLACK_API_URL": ("slack", "api_url"),
    "GITHUB_WEBHOOK_SECRET": ("github", "webhook_secret"),
    "GITHUB_TOKEN": ("github", "token"),
}
_NOT_KEYS = {"NELSON_CONFIG"}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the source, the key and the problem."""


def config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """Which file to read: --config, then NELSON_CONFIG, then ./nelson.toml; None = built-in."""
    if explicit:
        return Path(explicit)
    if environ.get("NELSON_CONFIG"):
        return Path(environ["NELSON_CONFIG"])
    local = Path("nelson.toml")
    return local if local.is_file() else None


def load_settings(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, str]:
    """Return the settings and a description of where they came from."""
    env = os.environ if environ is None else environ
    path = config_path(explicit, env)
    source = str(path) if path else "built-in defaults"
    raw = _read_file(path or DEFAULT_FILE, source)
    overridden = _apply_environment(raw, env)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, overridden)) from None
    return settings, source


def _read_file(path: Path, source: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yml", ".yaml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a table of keys")
    return data


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> set[tuple[str, ...]]:
    """Overlay environment variables onto the raw file data; return the key paths they set."""
    overridden: set[tuple[str, ...]] = set()
    for name, value in sorted(environ.items()):
        if name in _ALIASES:
            path: tuple[str, ...] = _ALIASES[name]
        elif name.startswith("NELSON_") and name not in _NOT_KEYS:
            path = tuple(part.lower() for part in name[len("NELSON_") :].split("__"))
            # Other programs' NELSON_* variables (test settings, say) are not ours to judge.
            if path[0] not in Settings.model_fields:
                continue
        else:
            continue
        _set_path(raw, path, _env_value(value))
        overridden.add(path)
    return overridden


def _set_path(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        key = _matching_key(node, part)
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[_matching_key(node, path[-1])] = value


def _matching_key(node: dict[str, Any], part: str) -> str:
    # Environment names cannot hold '-': DC_EAST matches an existing 'dc-east'.
    for key in node:
        if key.lower().replace("-", "_") == part:
            return key
    return part


def _env_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _describe(exc: ValidationError, source: str, overridden: set[tuple[str, ...]]) -> str:
    lines = [f"the configuration from {source} is not valid:"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"] if part != "__root__")
        origin = ""
        prefix = tuple(str(p) for p in error["loc"])
        if any(prefix[: len(path)] == path for path in overridden):
            env_name = "NELSON_" + "__".join(p.upper().replace("-", "_") for p in prefix)
            origin = f" (set from the environment, {env_name})"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a setting this version knows (check the spelling)"
        lines.append(f"  {location or '(top level)'}{origin}: {message}")
    return "\n".join(lines)
