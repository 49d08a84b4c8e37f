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
