"""A fake Nomad agent for tests (see server.py)."""

from tests.fakes.nomad.server import FakeNomad

__all__ = ["FakeNomad"]
