"""Blueprints: scheduler templates that turn a stack into what its scheduler is given.

A blueprint is YAML with Jinja2 tags, rendered in Jinja2's sandbox with strict variables:
`{{ name }}` writes the variable as a JSON value (a quoted string, a number, a list), which
is also valid YAML, so values never break the document whatever characters they hold.
`{% for port in ports %}...{% endfor %}` and `{% if schedule %}...{% endif %}` are the only
logic a blueprint needs. The result is parsed as YAML into the scheduler's request body.

Variables (see docs/nomad.md): stack, unit, version, namespace, datacenter, plan, image,
instances, cpu (cores), cpu_mhz, memory_mb, schedule (a cron expression or null), region,
meta (a mapping), env (a list of {name, value}), ports (a list of {label, nomad_label,
number, protocol, first}), checks (a list of {name, port_label, nomad_label, type, protocol,
path, interval_ns, timeout_ns})."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
KINDS = ("nomad",)
MAX_BYTES = 256 * 1024


class BlueprintError(ValueError):
    """The blueprint cannot be rendered into a spec; the message names the line."""


@dataclass(frozen=True, slots=True)
class BlueprintRef:
    name: str
    revision: int | None  # None: the latest

    def __str__(self) -> str:
        return self.name if self.revision is None else f"{self.name}@{self.revision}"


def parse_ref(text: str) -> BlueprintRef:
    """`name` or `name@revision`."""
    name, at, revision = text.strip().partition("@")
    if not NAME.match(name):
        raise BlueprintError(
            f"'{text}' is not a blueprint name: lowercase letters, digits and dashes, "
            "optionally @revision"
        )
    if at and not (revision.isdigit() and int(revision) > 0):
        raise BlueprintError(f"'{text}': the revision after @ must be a number like {name}@2")
    return BlueprintRef(name, int(revision) if at else None)


_ESCAPED_PAIR = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _yaml_escape(match: re.Match[str]) -> str:
    if match.group(1):  # an escaped backslash: leave it, and what follows it, alone
        return match.group(1)
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def _json(value: Any) -> Any:
    # an undefined variable is left to StrictUndefined, which raises naming it
    if isinstance(value, jinja2.Undefined):
        return value
    # JSON writes characters beyond U+FFFF as surrogate pairs, which YAML reads as two
    # characters: write them as YAML's \UXXXXXXXX instead
    return _ESCAPED_PAIR.sub(_yaml_escape, json.dumps(value))


@functools.lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        finalize=_json,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@functools.lru_cache(maxsize=32)
def _template(text: str) -> jinja2.Template:
    return _environment().from_string(text)


def check(text: str) -> None:
    """Raise BlueprintError if `text` is not a template at all (syntax errors, by line)."""
    if len(text.encode()) > MAX_BYTES:
        raise BlueprintError(f"a blueprint is at most {MAX_BYTES // 1024} KiB")
    try:
        _environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise BlueprintError(f"line {exc.lineno}: {exc.message}") from None


def render(text: str, variables: dict[str, Any], *, name: str = "blueprint") -> dict[str, Any]:
    """The spec `text` renders to with `variables`; BlueprintError naming the line if the
    template, the variables or the resulting YAML are wrong."""
    try:
        rendered = _template(text).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise BlueprintError(f"{name} line {exc.lineno}: {exc.message}") from None
    except (jinja2.TemplateError, TypeError) as exc:  # undefined, sandbox refusals, non-JSON
        line = _template_line(exc)
        where = f" line {line}" if line else ""
        raise BlueprintError(f"{name}{where}: {exc}") from None
    try:
        spec = yaml.safe_load(rendered)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        if mark is None:
            raise BlueprintError(f"{name}: the rendered text is {problem}") from None
        lines = rendered.splitlines()
        shown = lines[mark.line].strip() if mark.line < len(lines) else ""
        raise BlueprintError(
            f"{name}: rendered line {mark.line + 1} ({shown!r}): {problem}"
        ) from None
    if not isinstance(spec, dict):
        raise BlueprintError(f"{name}: renders to {type(spec).__name__}, not a mapping of keys")
    return spec


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised at (Jinja2 puts template frames in tracebacks)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
