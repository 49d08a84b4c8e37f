"""Registering the manifests found in the configured directories at start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from commands.handlers.catalogue import unit_records
from commands.manifests import Manifests
from commands.ports import Store, StoreError
from commands.settings import Settings
from domain.manifest import ManifestInvalid
from domain.records import AuditEvent

log = logging.getLogger("nelson.manifests")
FILE = ".nelson.yml"


def discover(directory: Path) -> list[tuple[str, Path]]:
    """`dir/.nelson.yml` is repository `dir`; else each `dir/<repo>/.nelson.yml`."""
    if (directory / FILE).is_file():
        return [(directory.name, directory / FILE)]
    return sorted(
        (child.name, child / FILE) for child in directory.iterdir() if (child / FILE).is_file()
    )


def _read(directories: tuple[str, ...]) -> tuple[list[tuple[str, Path, str]], list[str]]:
    """Each manifest file's repository, path and text; and what could not be read."""
    found: list[tuple[str, Path, str]] = []
    problems: list[str] = []
    for name in directories:
        directory = Path(name).expanduser()
        if not directory.is_dir():
            problems.append(f"manifest directory {directory} does not exist")
            continue
        for repository, path in discover(directory):
            try:
                found.append((repository, path, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: not registered: {exc}")
    return found, problems


async def register_directories(
    settings: Settings, store: Store, manifests: Manifests | None = None
) -> list[str]:
    """Register what the directories hold; return one line per problem (also logged).
    A bad manifest is skipped, never fatal: the bot still starts with the others."""
    manifests = manifests or Manifests(store, settings)
    found, problems = await asyncio.to_thread(_read, settings.manifest_dirs)
    for repository, path, text in found:
        try:
            manifest = manifests.parse(text)
            previous = await store.latest_manifest(repository)
            record = await store.register_manifest(
                repository, text, unit_records(manifest, repository), "nelson"
            )
        except ManifestInvalid as exc:
            problems.append(
                f"{path}: not registered, {len(exc.errors)} error(s): "
                + "; ".join(str(e) for e in exc.errors[:3])
            )
        except StoreError as exc:
            problems.append(f"{path}: not registered: {exc}")
        else:
            if previous is None or previous.id != record.id:
                await store.audit(
                    AuditEvent(
                        actor="nelson",
                        action="manifest",
                        target=f"repository:{repository}",
                        detail=f"registered revision {record.revision} from {path}",
                    )
                )
    for line in problems:
        log.warning("%s", line)
    return problems
