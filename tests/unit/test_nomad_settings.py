"""Configuration of Nomad datacenters: address, token from the environment, TLS, and the
token never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings

WEST = """
[datacenters.dc-west]
staging_registry = "registry.staging.internal:5000"
runtime_registry = "registry.west.internal:5000"
[datacenters.dc-west.scheduler]
kind = "nomad"
address = "https://nomad.west.internal:4646"
region = "eu"
namespace = "apps"
tls = { ca_cert = "/etc/nomad/ca.pem" }
"""
SECRET = "3f4a9c1e-secret-token"
ENV = {"NELSON_DATACENTERS__DC_WEST__SCHEDULER__TOKEN": SECRET}


def config(tmp_path: Path, text: str = WEST) -> str:
    path = tmp_path / "nelson.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_nomad_datacenter_takes_its_token_from_the_environment(tmp_path: Path) -> None:
    settings, _ = load_settings(config(tmp_path), environ=ENV)
    scheduler = settings.datacenters["dc-west"].scheduler
    assert scheduler.kind == "nomad" and scheduler.address == "https://nomad.west.internal:4646"
    assert (scheduler.region, scheduler.namespace) == ("eu", "apps")
    assert scheduler.tls is not None and scheduler.tls.ca_cert == "/etc/nomad/ca.pem"
    assert scheduler.token is not None and scheduler.token.get_secret_value() == SECRET
    assert SECRET not in settings.model_dump_json() and SECRET not in repr(settings)


def test_nelson_config_hides_the_nomad_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NELSON_DATACENTERS__DC_WEST__SCHEDULER__TOKEN", SECRET)
    assert main(["--config", config(tmp_path), "config"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert '"token": "**********"' in out and "https://nomad.west.internal:4646" in out


def test_a_nomad_scheduler_without_address_talks_to_the_local_agent(tmp_path: Path) -> None:
    text = WEST.replace('address = "https://nomad.west.internal:4646"', "").replace(
        'tls = { ca_cert = "/etc/nomad/ca.pem" }', ""
    )
    settings, _ = load_settings(config(tmp_path, text), environ={})
    assert settings.datacenters["dc-west"].scheduler.address == "http://127.0.0.1:4646"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("https://nomad.west.internal:4646", "nomad.west.internal:4646"),
            "is not a Nomad address",
        ),
        (
            ("https://nomad.west.internal:4646", "https://ops:pw@nomad.west.internal:4646"),
            "must not carry credentials",
        ),
        (("https://", "http://"), "tls options need an https:// Nomad address"),
        (('kind = "nomad"', 'kind = "docker"'), "apply to Nomad schedulers only"),
        (('{ ca_cert = "/etc/nomad/ca.pem" }', '{ client_cert = "/c.pem" }'), "go together"),
    ],
)
def test_bad_nomad_settings_are_named(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(config(tmp_path, WEST.replace(*change)), environ=ENV)
    assert message in str(error.value)
    assert "datacenters.dc-west.scheduler" in str(error.value)
    assert "pw@" not in str(error.value) or "must not carry" in str(error.value)
