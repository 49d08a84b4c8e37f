"""The chat language: one table of commands drives parsing, `help` and suggestions.

`parse_command` turns text into a typed command (commands.model) or raises ParseError with a
specific message, the command's usage and, where it can, a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from commands import model
from commands.model import Command
from commands.replies import ParseError
from commands.text import normalise
from domain.states import StackStatus
from domain.versions import InvalidVersion, Version

MAX_TEXT = 200_000
_TOKEN = re.compile(r'"([^"]*)"|\'([^\']*)\'|(\S+)')
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*$")
_STACK = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class Words:
    """The words after the command name, consumed left to right by a command's parser."""

    def __init__(self, spec: CommandSpec, words: list[str], body: str | None) -> None:
        self.spec = spec
        self.words = words
        self.body = body  # text after the command line or inside a ``` fence
        self.at = 0

    def error(self, message: str, suggestion: str | None = None) -> ParseError:
        return ParseError(
            message,
            f"`help {self.spec.name}` explains it with examples.",
            suggestion=f"did you mean `{suggestion}`?" if suggestion else None,
            usage=self.spec.usage,
        )

    def more(self) -> bool:
        return self.at < len(self.words)

    def peek(self) -> str | None:
        return self.words[self.at].lower() if self.more() else None

    def take(self, what: str) -> str:
        if not self.more():
            raise self.error(f"`{self.spec.name}` needs {what}.")
        word = self.words[self.at]
        self.at += 1
        return word

    def name(self, what: str, pattern: re.Pattern[str] = _NAME) -> str:
        word = self.take(what).lower()
        if not pattern.match(word) or len(word) > 200:
            raise self.error(f"'{_short(word)}' is not a valid {what}.")
        return word

    def version(self) -> Version:
        word = self.take("a version (like 1.2.3)")
        try:
            return Version.parse(word)
        except InvalidVersion as exc:
            raise self.error(str(exc)) from None

    def number(self, what: str) -> int:
        word = self.take(what).lstrip("#")
        if not word.isdigit() or len(word) > 12:
            raise self.error(f"'{_short(word)}' is not {what}; ids are numbers, like 12 or #12.")
        return int(word)

    def rest(self) -> str:
        words, self.at = self.words[self.at :], len(self.words)
        return " ".join(words)

    def done(self) -> None:
        if self.more():
            extra = " ".join(self.words[self.at :])
            raise self.error(f"I did not expect '{_short(extra)}' after `{self.spec.name}`.")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the command parsers ------------------------------------------------------------------------

_DEPLOY_CLAUSES = ("to", "in", "plan", "image", "everywhere", "on")


def _datacenter_list(w: Words) -> tuple[tuple[str, ...], bool]:
    names: list[str] = []
    everywhere = False
    # `to everywhere` is a datacenter list of its own; otherwise a clause word ends the list.
    while w.more() and (
        w.peek() not in _DEPLOY_CLAUSES or (not names and w.peek() == "everywhere")
    ):
        word = w.take("a datacenter")
        for part in filter(None, word.lower().split(",")):
            if part in ("and", "&"):
                continue
            if part in ("everywhere", "all"):
                everywhere = True
            elif not _NAME.match(part):
                raise w.error(f"'{_short(part)}' is not a valid datacenter name.")
            else:
                names.append(part)
    if not names and not everywhere:
        raise w.error("`to` needs at least one datacenter (or `everywhere`).")
    if everywhere and names:
        raise w.error("say either `everywhere` or a list of datacenters, not both.")
    return tuple(names), everywhere


def _deploy(w: Words) -> Command:
    unit = w.name("unit name")
    version = w.version()
    datacenters: tuple[str, ...] = ()
    everywhere = False
    namespace = plan = image = None
    seen: set[str] = set()
    seen_words: set[str] = set()
    while w.more():
        word = w.take("a clause")
        keyword = word.lower()
        if keyword not in _DEPLOY_CLAUSES:
            raise w.error(
                f"I don't understand '{_short(word)}' in a deploy.",
                suggest(keyword, _DEPLOY_CLAUSES),
            )
        canonical = "to" if keyword in ("on", "everywhere") else keyword
        if canonical == "to" and canonical in seen and "everywhere" in (keyword, *seen_words):
            raise w.error("say either `everywhere` or a list of datacenters, not both.")
        seen_words.add(keyword)
        if canonical in seen:
            raise w.error(f"`{canonical}` is given twice.")
        seen.add(canonical)
        if keyword == "everywhere":
            everywhere = True
        elif keyword in ("to", "on"):
            datacenters, everywhere = _datacenter_list(w)
        elif keyword == "in":
            namespace = w.name("namespace", _NAMESPACE)
        elif keyword == "plan":
            plan = w.name("plan name")
        else:
            image = w.take("an image reference")
    return model.Deploy(unit, version, datacenters, everywhere, namespace, plan, image)


def _commit(w: Words) -> Command:
    unit = w.name("unit name")
    version = w.version()
    keyword = w.take("`to <namespace>`").lower()
    if keyword not in ("to", "in", "into"):
        raise w.error(
            f"expected `to <namespace>`, not '{_short(keyword)}'.", suggest(keyword, ["to"])
        )
    namespace = w.name("namespace", _NAMESPACE)
    w.done()
    return model.Commit(unit, version, namespace)


_STATUSES = tuple(s.value for s in StackStatus)


def _filters(w: Words, allowed: tuple[str, ...]) -> dict[str, object]:
    found: dict[str, object] = {}
    while w.more():
        word = w.take("a filter").lower()
        key = {"on": "at", "status": "status", "statuses": "status"}.get(word, word)
        if key not in allowed:
            raise w.error(f"I don't understand '{_short(word)}' here.", suggest(word, allowed))
        if key in found:
            raise w.error(f"`{key}` is given twice.")
        if key == "in":
            found[key] = w.name("namespace", _NAMESPACE)
        elif key == "at":
            found[key] = w.name("datacenter name")
        elif key == "unit":
            found[key] = w.name("unit name")
        else:
            statuses: list[StackStatus] = []
            while w.more() and (w.peek() not in allowed or not statuses):
                for part in filter(None, w.take("a status").lower().split(",")):
                    if part not in _STATUSES:
                        raise w.error(
                            f"'{_short(part)}' is not a stack status (statuses: "
                            f"{', '.join(_STATUSES)}).",
                            suggest(part, _STATUSES),
                        )
                    statuses.append(StackStatus(part))
            if not statuses:
                raise w.error("`status` needs at least one status.")
            found[key] = tuple(dict.fromkeys(statuses))
    return found


def _stacks(w: Words) -> Command:
    f = _filters(w, ("in", "at", "status", "unit"))
    return model.ListStacks(
        namespace=f.get("in"),  # type: ignore[arg-type]
        datacenter=f.get("at"),  # type: ignore[arg-type]
        statuses=f.get("status", ()),  # type: ignore[arg-type]
        unit=f.get("unit"),  # type: ignore[arg-type]
    )


def _units(w: Words) -> Command:
    f = _filters(w, ("in", "at"))
    return model.ListUnits(namespace=f.get("in"), datacenter=f.get("at"))  # type: ignore[arg-type]


def _one_stack(build: Callable[[str], Command]) -> Callable[[Words], Command]:
    def parse(w: Words) -> Command:
        ref = w.name("stack name or guid", _STACK)
        w.done()
        return build(ref)

    return parse


def _deprecate(w: Words) -> Command:
    unit = w.name("unit name")
    version = w.version()
    w.done()
    return model.Deprecate(unit, version)


def _approve(w: Words) -> Command:
    approval = w.number("an approval id")
    w.done()
    return model.Approve(approval)


def _reject(w: Words) -> Command:
    approval = w.number("an approval id")
    return model.Reject(approval, w.rest())


def _nothing(build: Callable[[], Command]) -> Callable[[Words], Command]:
    def parse(w: Words) -> Command:
        w.done()
        return build()

    return parse


def _help(w: Words) -> Command:
    topic = w.peek()
    if topic is not None:
        w.take("a topic")
        w.done()
        spec = find_spec(topic)
        if spec is None:
            raise unknown_command(topic)
        return model.Help(spec.name)
    return model.Help()


def _lint(w: Words) -> Command:
    if w.peek() == "manifest":
        w.take("manifest")
    if w.body is not None:
        w.done()
        return model.Lint(text=w.body)
    if w.more():
        return model.Lint(path=w.rest())
    return model.Lint(attachment=True)


def _manifest(w: Words) -> Command:
    if w.peek() in ("add", "register"):
        w.take("add")
    repository = w.take("a repository name, like acme/howdy")
    if not _REPOSITORY.match(repository) or len(repository) > 200:
        raise w.error(f"'{_short(repository)}' is not a valid repository name (like acme/howdy).")
    if w.body is not None:
        w.done()
        return model.RegisterManifest(repository, text=w.body)
    if w.more():
        return model.RegisterManifest(repository, path=w.rest())
    return model.RegisterManifest(repository, attachment=True)


def _graph(w: Words) -> Command:
    unit = w.name("unit name")
    w.done()
    return model.Graph(unit)


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    category: str
    parse: Callable[[Words], Command]
    aliases: tuple[str, ...] = ()
    description: str = ""
    examples: tuple[str, ...] = ()
    takes_body: bool = False  # text on the following lines belongs to the command


DEPLOYING = "Deploying"
LOOKING = "Looking around"
TRAFFIC = "Approvals and traffic"
MANIFESTS = "Manifests"
ABOUT = "About the bot"

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "deploy",
        "deploy <unit> <version> [to <dc>[,<dc>...] | everywhere] [in <namespace>] "
        "[plan <plan>] [image <ref>]",
        "release a version of a unit and deploy it",
        DEPLOYING,
        _deploy,
        description="Creates the release on first use (its image comes from the configured "
        "template unless `image` names one) and one stack per datacenter and plan. Without `to`, "
        "every datacenter the manifest allows; without `in`, the default namespace; without "
        "`plan`, every plan the namespace gives the unit.",
        examples=(
            "deploy howdy-http 1.2.3 to dc-east",
            "deploy howdy-http v1.2 to dc-east, dc-west in qa",
            "deploy accounts 2.0.0 everywhere plan big",
        ),
    ),
    CommandSpec(
        "commit",
        "commit <unit> <version> to <namespace>",
        "deploy an existing release into another namespace",
        DEPLOYING,
        _commit,
        description="Deploys a version that was already released into a namespace, with that "
        "namespace's plans.",
        examples=("commit howdy-http 1.2.3 to qa",),
    ),
    CommandSpec(
        "redeploy",
        "redeploy <stack>",
        "make a fresh stack of the same release at the same place",
        DEPLOYING,
        _one_stack(model.Redeploy),
        examples=("redeploy howdy-http--1-2-3--k3x9q0ab",),
    ),
    CommandSpec(
        "deprecate",
        "deprecate <unit> <version>",
        "stop new deploys from depending on a version",
        DEPLOYING,
        _deprecate,
        description="Existing dependants keep working; once nothing depends on it, it is "
        "cleaned up.",
        examples=("deprecate accounts 1.4.0",),
    ),
    CommandSpec(
        "stacks",
        "stacks [in <namespace>] [at <dc>] [status <status>[,<status>...]] [unit <unit>]",
        "list stacks, newest first",
        LOOKING,
        _stacks,
        description=f"Statuses: {', '.join(_STATUSES)}.",
        examples=("stacks", "stacks in qa at dc-east", "stacks status warming,ready"),
    ),
    CommandSpec(
        "units",
        "units [in <namespace>] [at <dc>]",
        "list units and their live stacks",
        LOOKING,
        _units,
        examples=("units", "units in prod at dc-west"),
    ),
    CommandSpec(
        "inspect",
        "inspect <stack|guid>",
        "everything about one stack: release, status history, dependencies",
        LOOKING,
        _one_stack(model.Inspect),
        examples=("inspect howdy-http--1-2-3--k3x9q0ab", "inspect 4f2a9c1b7e"),
    ),
    CommandSpec(
        "logs",
        "logs <stack>",
        "the workflow log of a stack",
        LOOKING,
        _one_stack(model.Logs),
        examples=("logs howdy-http--1-2-3--k3x9q0ab",),
    ),
    CommandSpec(
        "runtime",
        "runtime <stack>",
        "what the scheduler says about a stack's instances and health",
        LOOKING,
        _one_stack(model.Runtime),
        examples=("runtime howdy-http--1-2-3--k3x9q0ab",),
    ),
    CommandSpec(
        "graph",
        "graph <unit>",
        "who depends on a unit, and what it depends on",
        LOOKING,
        _graph,
        examples=("graph accounts",),
    ),
    CommandSpec(
        "approvals",
        "approvals",
        "what is waiting for approval",
        TRAFFIC,
        _nothing(model.ListApprovals),
    ),
    CommandSpec(
        "approve",
        "approve <id>",
        "approve a waiting request",
        TRAFFIC,
        _approve,
        examples=("approve 12", "approve #12"),
    ),
    CommandSpec(
        "reject",
        "reject <id> [reason]",
        "reject a waiting request",
        TRAFFIC,
        _reject,
        examples=("reject 12 error rate too high",),
    ),
    CommandSpec(
        "reverse",
        "reverse <stack>",
        "move traffic back from a new stack to the old one",
        TRAFFIC,
        _one_stack(model.Reverse),
        examples=("reverse howdy-http--1-2-3--k3x9q0ab",),
    ),
    CommandSpec(
        "manifest",
        "manifest <repository> [<path> | ```manifest```]",
        "register a repository's .nelson.yml (attached, pasted, or a path in the console)",
        MANIFESTS,
        _manifest,
        aliases=("register",),
        description="Validates first; a new revision applies to future deploys and never "
        "changes running stacks.",
        examples=("manifest acme/howdy examples/howdy-service.nelson.yml",),
        takes_body=True,
    ),
    CommandSpec(
        "manifests",
        "manifests",
        "list registered manifests",
        MANIFESTS,
        _nothing(model.ListManifests),
    ),
    CommandSpec(
        "lint",
        "lint [manifest] [<path> | ```manifest```]",
        "check a manifest and list every problem",
        MANIFESTS,
        _lint,
        description="Reads an attached file, text pasted after the command, or (in the "
        "console) a path.",
        examples=("lint manifest examples/howdy-service.nelson.yml",),
        takes_body=True,
    ),
    CommandSpec(
        "datacenters",
        "datacenters",
        "the datacenters, their scheduler and registries",
        ABOUT,
        _nothing(model.ListDatacenters),
        aliases=("dcs",),
    ),
    CommandSpec(
        "cleanup-policies",
        "cleanup-policies",
        "the expiration policies and what each keeps",
        ABOUT,
        _nothing(model.CleanupPolicies),
        aliases=("policies",),
    ),
    CommandSpec(
        "whoami", "whoami", "who you are to me and what you may do", ABOUT, _nothing(model.Whoami)
    ),
    CommandSpec(
        "help",
        "help [command]",
        "this list, or the details of one command",
        ABOUT,
        _help,
        aliases=("?", "commands"),
    ),
)

_BY_WORD = {word: spec for spec in COMMANDS for word in (spec.name, *spec.aliases)}


def find_spec(word: str) -> CommandSpec | None:
    return _BY_WORD.get(word.lower())


def unknown_command(word: str) -> ParseError:
    close = suggest(word, _BY_WORD)
    return ParseError(
        f"I don't know the command '{_short(word)}'.",
        "Try `help` for the list; common ones: deploy, stacks, inspect, datacenters.",
        suggestion=f"did you mean `{_BY_WORD[close].name}`?" if close else None,
    )


def _split(text: str) -> tuple[str, str | None]:
    """The command line and the body: text in a ``` fence, else the lines after the first."""
    fence = _FENCE.search(text)
    if fence is not None:
        return text[: fence.start()].strip(), fence.group(1)
    line, _, rest = text.partition("\n")
    return line.strip(), (rest if rest.strip() else None)


def parse_command(text: str) -> Command:
    if not isinstance(text, str):
        raise ParseError("I can only read text.")
    if len(text) > MAX_TEXT:
        raise ParseError(f"that message is too long for me (over {MAX_TEXT // 1000} kB).")
    cleaned = normalise(text)
    if not cleaned:
        raise ParseError("there is no command in that message.", "Try `help`.")
    line, body = _split(cleaned)
    words = [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(line)]
    if (
        words
        and words[-1] not in (".", "!")
        and words[-1][-1:] in (".", "!", "?")
        and len(words) > 1
    ):
        words[-1] = words[-1].rstrip(".!?")  # a sentence's final full stop
    words = [w for w in words if w]
    if not words:
        raise ParseError("there is no command in that message.", "Try `help`.")
    spec = find_spec(words[0])
    if spec is None:
        raise unknown_command(words[0])
    if body is not None and not spec.takes_body:
        # Extra lines belong to no other command: read them as more words.
        words += [w for w in body.split() if w]
        body = None
    return spec.parse(Words(spec, words[1:], body))


# -- help ---------------------------------------------------------------------------------------


def help_overview() -> str:
    lines: list[str] = []
    for category in (DEPLOYING, LOOKING, TRAFFIC, MANIFESTS, ABOUT):
        lines.append(f"*{category}*")
        for spec in COMMANDS:
            if spec.category == category:
                lines.append(f"  `{spec.usage}`  {spec.summary}")
        lines.append("")
    lines.append("`help <command>` gives details and examples.")
    return "\n".join(lines)


def help_for(topic: str) -> str:
    spec = find_spec(topic.strip())
    if spec is None:
        raise unknown_command(topic.strip())
    lines = [f"`{spec.usage}`", spec.summary[:1].upper() + spec.summary[1:] + "."]
    if spec.description:
        lines.append(spec.description)
    if spec.aliases:
        lines.append("Also: " + ", ".join(f"`{a}`" for a in spec.aliases))
    if spec.examples:
        lines.append("Examples:")
        lines.extend(f"  `{example}`" for example in spec.examples)
    return "\n".join(lines)
