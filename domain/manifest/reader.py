"""Loading a manifest's YAML within limits, and the reader the stanza parsers share: it knows
where each value sits in the text and collects every error and warning found."""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Any

import yaml

from domain.durations import DurationError, parse_duration, whole_seconds
from domain.manifest.model import ManifestError, ManifestInvalid

Path = tuple[str | int, ...]

# A manifest is a few hundred values; aliases can make a small text expand without bound, and
# a pasted manifest must not be able to stall the bot.
MAX_NODES = 50_000
MAX_DEPTH = 64


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }.get(type(value), f"a {type(value).__name__}")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class Reader:
    """Holds the YAML positions of the document's values, and what was found wrong."""

    def __init__(self, marks: dict[Path, tuple[int, int]]) -> None:
        self.marks = marks
        self.errors: list[ManifestError] = []
        self.warnings: list[ManifestError] = []

    def _located(self, path: Path, message: str) -> ManifestError:
        probe = path
        while probe not in self.marks and probe:
            probe = probe[:-1]
        line, column = self.marks.get(probe, (None, None))
        return ManifestError(format_path(path), message, line, column)

    def error(self, path: Path, message: str) -> None:
        self.errors.append(self._located(path, message))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(self._located(path, message))

    def mapping(
        self,
        value: Any,
        path: Path,
        keys: tuple[str, ...],
        required: tuple[str, ...] = (),
        elsewhere: tuple[tuple[tuple[str, ...], str], ...] = (),
    ) -> dict[str, Any] | None:
        """The value as a mapping of known keys; `elsewhere` names keys that belong in another
        stanza, with where they go."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping with keys {', '.join(keys)}, found {kind(value)}")
            return None
        for key in value:
            if key not in keys:
                home = next((where for group, where in elsewhere if key in group), None)
                hint = did_you_mean(str(key), keys) or f"; known keys: {', '.join(keys)}"
                message = (
                    f"'{key}' does not go here: {home}" if home else f"unknown key '{key}'{hint}"
                )
                self.error((*path, str(key)), message)
        for key in required:
            if value.get(key) in (None, ""):
                self.error((*path, key), f"'{key}' is required")
        return value

    def sequence(self, value: Any, path: Path) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, found {kind(value)}")
            return []
        return value

    def text(self, value: Any, path: Path, default: str = "") -> str:
        if value is None:
            return default
        if isinstance(value, bool | dict | list):
            self.error(path, f"expected text, found {kind(value)}")
            return default
        return str(value)

    def number(self, value: Any, path: Path, default: float, what: str) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"{what} must be a number, found {kind(value)}")
            return default
        if value <= 0:
            self.error(path, f"{what} must be greater than 0, found {value}")
        return float(value)

    def whole(self, value: Any, path: Path, what: str, below: int | None = None) -> int | None:
        """A whole number greater than 0 (and below `below`), or None after an error."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"{what} must be a whole number, found {value!r}")
            return None
        if value <= 0 or (below is not None and value >= below):
            limit = f" and less than {below:,}" if below is not None else ""
            self.error(path, f"{what} must be greater than 0{limit}, found {value}")
            return None
        return value

    def duration(self, value: Any, path: Path) -> timedelta | None:
        """A positive duration, or None after an error."""
        try:
            found = parse_duration(value)
        except DurationError as exc:
            self.error(path, str(exc))
            return None
        if found <= timedelta(0):
            self.error(path, "the duration must be longer than zero")
            return None
        return found

    def seconds(self, value: Any, path: Path, default: int) -> int:
        if value is None:
            return default
        found = self.duration(value, path)
        return whole_seconds(found) if found is not None else default


def too_complex(why: str) -> ManifestInvalid:
    return ManifestInvalid((ManifestError("", f"the manifest is too complex: {why}", 1, 1),))


def _marks(root: yaml.Node) -> dict[Path, tuple[int, int]]:
    """Where each path starts in the text, walking aliases as expanded, within MAX_NODES."""
    out: dict[Path, tuple[int, int]] = {}
    todo: list[tuple[yaml.Node, Path]] = [(root, ())]
    visited = 0
    while todo:
        node, path = todo.pop()
        visited += 1
        if visited > MAX_NODES:
            raise too_complex(
                f"it expands to more than {MAX_NODES:,} values (check its anchors and aliases)"
            )
        if len(path) > MAX_DEPTH:
            raise too_complex(f"it is nested more than {MAX_DEPTH} levels deep")
        out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    child = (*path, key.value)
                    out[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
                    todo.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return out


def load(text: str) -> tuple[Any, dict[Path, tuple[int, int]]]:
    try:
        # Compose first: aliases stay shared nodes, so the size check runs before anything
        # builds the expanded values.
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            marks = _marks(node) if node is not None else {}
            # one parse: the values are built from the composed node (parsing twice, once
            # for the marks and once for the values, doubled the CPU of every deploy command)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ManifestInvalid((ManifestError("", message, line, column),)) from None
    except RecursionError:
        raise too_complex(f"it is nested more than {MAX_DEPTH} levels deep") from None
    return data, marks
