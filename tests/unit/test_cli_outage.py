"""The database going away while a command starts (a PostgreSQL restart while a replica
builds itself) ends the process with one clear line and code 2, not a traceback; a fault
still shows its traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "nelson.toml"
    config.write_text(
        'database_url = "postgresql://nelson:dbpw@db.internal:5432/nelson"\n', encoding="utf-8"
    )
    return config


def test_a_database_gone_while_starting_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.cli

    async def cut_off(*_args: Any) -> int:
        raise OperationalError(
            "SELECT manifests.id FROM manifests",
            {},
            Exception("consuming input failed: server closed the connection unexpectedly"),
        )

    monkeypatch.setattr(bot.cli, "_dispatch", cut_off)
    assert bot.cli.main(["--config", str(_config(tmp_path)), "run", "stacks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    where = "postgresql://nelson:***@db.internal:5432/nelson"
    assert f"the database at {where} stopped answering" in err
    assert "server closed the connection unexpectedly" in err
    assert "dbpw" not in err and "Traceback" not in err and "SELECT" not in err


def test_a_fault_while_starting_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.cli

    async def broken(*_args: Any) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(bot.cli, "_dispatch", broken)
    with pytest.raises(ValueError, match="a bug"):
        bot.cli.main(["--config", str(_config(tmp_path)), "run", "stacks"])


def _logged(exc: Exception) -> str:
    import io
    import logging

    from bot.outage import OutageLines

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OutageLines())
    log = logging.getLogger("nelson.test-outage-lines")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise exc
        except Exception:
            log.exception("a listener failed on %s", "StackProgress")
    finally:
        log.removeHandler(handler)
    return out.getvalue()


def test_an_outage_met_anywhere_is_one_warning_line_and_a_fault_keeps_its_traceback() -> None:
    gone = OperationalError(
        "INSERT INTO x", {}, Exception("connection failed: the database system is shutting down")
    )
    said = _logged(gone)
    assert said == (
        "WARNING nelson.test-outage-lines: a listener failed on StackProgress: the database is "
        "unreachable (Exception: connection failed: the database system is shutting down)\n"
    )
    said = _logged(ValueError("a bug"))
    assert said.startswith("ERROR nelson.test-outage-lines: a listener failed on StackProgress")
    assert "Traceback" in said and "ValueError: a bug" in said
