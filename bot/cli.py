"""The `nelson` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from adapters.storage.urls import safe
from bot.bootstrap import Application, build
from bot.config import ConfigError, load_settings
from bot.console import local_principal, progress_printer, run_console
from bot.conversation import Outcome
from bot.outage import OutageLines, describe, is_outage
from bot.terminal import render, save_attachments
from commands.ports import StoreError
from commands.settings import Settings
from domain.manifest import ManifestError, ManifestInvalid, parse_manifest
from domain.redaction import redacted
from domain.traffic import ShiftState


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nelson",
        description="Nelson chat-ops: deploy containers to datacenters and run their lifecycle.",
    )
    parser.add_argument(
        "--config",
        help="configuration file (TOML or YAML); default: "
        "$NELSON_CONFIG, ./nelson.toml, or the built-in defaults",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    console = sub.add_parser("console", help="an interactive prompt over the chat commands")
    console.add_argument("--as", dest="as_user", help="act as this user (default: console.user)")

    run = sub.add_parser(
        "run",
        help="run one chat command and print the reply (exit 0 ok, 1 user error, 2 internal error)",
    )
    run.add_argument("text", nargs="+", help='the command, e.g. "stacks in qa"')
    run.add_argument("--as", dest="as_user", help="act as this user (default: console.user)")

    lint = sub.add_parser("lint", help="check a manifest (exit 0 valid, 1 invalid)")
    lint.add_argument("what", choices=["manifest"], help="what to lint")
    lint.add_argument("path", help="path to a .nelson.yml (or a directory holding one)")

    serve = sub.add_parser(
        "serve",
        help="run the Slack bot (HTTP mode, or Socket Mode when SLACK_APP_TOKEN is set); "
        "with --no-slack, everything but Slack",
    )
    serve.add_argument("--host", help="address to listen on (default: slack.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: slack.port)")
    serve.add_argument(
        "--no-slack",
        action="store_true",
        help="run deploys, traffic shifts, cleanup passes and the daily digest (to the log) "
        "without Slack; GET /healthz",
    )

    sub.add_parser(
        "cleanup",
        help="run one cleanup pass now (expiration policies, garbage, reaping); "
        "a running bot does this every lifecycle.interval",
    )

    announce = sub.add_parser(
        "announce",
        help="post the cleanup digest now (what will be removed, and when); its notice starts now",
    )
    announce.add_argument(
        "--no-slack", action="store_true", help="print the digest here instead of posting it"
    )

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser("upgrade", help="apply database migrations")
    db_sub.add_parser("current", help="show the applied migration")

    sub.add_parser("config", help="show the effective configuration (secrets hidden)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(OutageLines())
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings, source = load_settings(args.config)
    except ConfigError as exc:
        print(f"nelson: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        # Until the bot installs its own handler, SIGTERM stops it at once (as PID 1 in a
        # container the default would be to ignore it).
        signal.signal(signal.SIGTERM, _stop_now)
    try:
        return asyncio.run(_dispatch(args, settings, source))
    except StoreError as exc:
        print(f"nelson: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not is_outage(exc):
            raise
        # the database went away between opening it and answering (a restart while starting)
        print(
            f"nelson: the database at {safe(settings.database_url)} stopped answering "
            f"({describe(exc)}); try again once it answers",
            file=sys.stderr,
        )
        return 2


def _stop_now(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


async def _dispatch(args: argparse.Namespace, settings: Settings, source: str) -> int:
    if args.command == "config":
        print(f"# from {source}")
        # Tokens are SecretStr already; addresses may carry passwords and tokens too.
        shown = settings.model_copy(update={"database_url": safe(settings.database_url)})
        print(json.dumps(redacted(shown.model_dump(mode="json")), indent=2))
        return 0
    if args.command == "db":
        return await _db(args.db_command, settings)
    if args.command == "lint":
        return _lint(args.path, settings)
    if args.command == "serve":
        return await _serve(
            settings, args.host, args.port, no_slack=args.no_slack, verbose=args.verbose
        )
    if args.command == "announce":
        return await _announce(settings, no_slack=args.no_slack)
    app = await build(settings)
    try:
        if args.command == "console":
            return await run_console(app, args.as_user)
        if args.command == "run":
            return await _run(app, " ".join(args.text), args.as_user)
        if args.command == "cleanup":
            return await _cleanup(app)
    finally:
        await app.close()
    return 2


async def _cleanup(app: Application) -> int:
    """One pass, as the bot's periodic job runs it (same lease: never two at once)."""
    if app.lifecycle is None:
        print("nelson: the cleanup does not run in this configuration", file=sys.stderr)
        return 2
    app.events.subscribe(progress_printer(app))
    report = await app.lifecycle.run_once()
    if not report.ran:
        print("Another process is running a cleanup pass right now; nothing was done.")
        return 0
    print(
        f"Judged {report.judged} stacks: extended {report.extended}, "
        f"garbage {len(report.garbage)}, reaped {len(report.reaped)}, "
        f"failed to reap {len(report.failed)}."
    )
    for stack in report.garbage:
        print(f"  garbage: {stack.name}")
    waiting = await app.store.pending_removals()
    unannounced = [p for p in waiting if p.stack.announced_at is None]
    if unannounced:
        print(
            f"{len(unannounced)} garbage stack(s) wait for the cleanup digest (daily at "
            f"{app.settings.lifecycle.announce_at} UTC from a running `nelson serve`, or "
            "`nelson announce` now); removal comes lifecycle.notice after it."
        )
    return 1 if report.failed else 0


async def _announce(settings: Settings, *, no_slack: bool) -> int:
    """The digest now, posted in Slack (or printed); the notice before removal starts now."""
    from bot.slack.serve import SetupError, check_tokens, verify_token

    if not no_slack:
        try:
            check_tokens(settings)
        except SetupError as exc:
            hint = "Or use `nelson announce --no-slack` to print it."
            print(f"nelson: {exc} {hint}", file=sys.stderr)
            return 2
    app = await build(settings)
    try:
        if app.lifecycle is None:
            print("nelson: the cleanup does not run in this configuration", file=sys.stderr)
            return 2
        bot = None
        if no_slack:
            app.events.subscribe(progress_printer(app))
        else:
            from bot.slack.app import SlackBot

            bot = SlackBot(app)
            try:
                await verify_token(bot)
            except SetupError as exc:
                print(f"nelson: {exc}", file=sys.stderr)
                return 2
        event = await app.lifecycle.announce_now()
        if event is None:
            print("Another process is announcing right now; nothing was done.")
            return 0
        if not event.removals:
            print("Nothing waits for removal: no digest.")
            return 0
        if bot is not None:
            await bot.close()  # everything queued is posted
            channels = ", ".join(f"#{channel}" for channel, _ in event.digests) or "no channel"
            print(f"Posted the digest of {len(event.removals)} removal(s) in {channels}.")
        return 0
    finally:
        await app.close()


async def _run(app: Application, text: str, as_user: str | None) -> int:
    app.events.subscribe(progress_printer(app))
    await app.start()
    answer = await app.conversation.answer(text, local_principal(app, as_user), local=True)
    stream = sys.stdout if answer.outcome is Outcome.OK else sys.stderr
    print(render(answer.reply), file=stream)
    if saved := save_attachments(answer.reply):
        print(saved, file=stream)
    if app.deploys is not None:
        # A one-shot deploy follows its stacks to the end before the process exits.
        await app.deploys.wait_idle()
        deployed = answer.reply.operation_id is not None
        if deployed and app.traffic is not None and await app.store.shifts((ShiftState.RUNNING,)):
            # this process exits now: say truthfully whether anything keeps shifts moving
            print(f"Traffic shifts: {await app.traffic.drivers()}.")
        if answer.reply.operation_id is not None:
            operation = await app.store.operation(answer.reply.operation_id)
            stacks = await app.store.stacks_by_ids(operation.stack_ids if operation else ())
            failed = [s for s in stacks if s.status.value == "failed"]
            for stack in stacks:
                print(f"{stack.name} {stack.datacenter}/{stack.namespace}: {stack.status.value}")
            if failed:
                return int(Outcome.USER_ERROR)
    return int(answer.outcome)


def _lint(path: str, settings: Settings) -> int:
    # Linting needs no database: read, parse, report.
    file = Path(path)
    if file.is_dir():
        file = file / ".nelson.yml"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(
            f"nelson: cannot read {file}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr
        )
        return 1
    try:
        manifest = parse_manifest(text, default_namespace=settings.default_namespace)
    except ManifestInvalid as exc:
        count = len(exc.errors)
        print(f"{file}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        _print_warnings(exc.warnings, sys.stderr)
        return 1
    units = ", ".join(unit.name for unit in manifest.units)
    print(f"{file}: valid ({len(manifest.units)} unit(s): {units}; {len(manifest.plans)} plan(s))")
    _print_warnings(manifest.warnings, sys.stdout)
    return 0


def _print_warnings(warnings: tuple[ManifestError, ...], stream: TextIO) -> None:
    # Accepted, so exit 0, but listed: what Nelson would judge differently, ignored keys.
    if warnings:
        print(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}:", file=stream)
        for warning in warnings:
            print(f"  {warning}", file=stream)


async def _db(action: str, settings: Settings) -> int:
    from adapters.storage.migrate import current_revision, upgrade

    if action == "upgrade":
        await asyncio.to_thread(upgrade, settings.database_url)
    print(
        f"database at revision {await asyncio.to_thread(current_revision, settings.database_url)}"
    )
    return 0


async def _serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    *,
    no_slack: bool = False,
    verbose: bool = False,
) -> int:
    from bot.replicas import SecondReplica, single_replica

    # a daemon tells what it does (passes, digests, shifts) without -v; the scheduler's
    # "running job" lines every few seconds only with -v
    logging.getLogger().setLevel(logging.INFO)
    if not verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        with single_replica(settings.database_url):
            return await _serve_claimed(settings, host, port, no_slack=no_slack)
    except SecondReplica as exc:
        print(f"nelson: {exc}", file=sys.stderr)
        return 2


async def _serve_claimed(
    settings: Settings, host: str | None, port: int | None, *, no_slack: bool
) -> int:
    from bot.slack.serve import SetupError, check_tokens, serve, serve_headless

    try:
        if not no_slack:
            check_tokens(settings)  # before opening anything
        app = await build(settings)
    except SetupError as exc:
        hint = "" if no_slack else " (`nelson serve --no-slack` runs everything but Slack.)"
        print(f"nelson: {exc}{hint}", file=sys.stderr)
        return 2
    try:
        if no_slack:
            return await serve_headless(app, host=host, port=port)
        return await serve(app, host=host, port=port)
    except SetupError as exc:
        print(f"nelson: {exc}", file=sys.stderr)
        return 2
    finally:
        await app.close()


if __name__ == "__main__":
    sys.exit(main())
