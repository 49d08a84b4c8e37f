"""The manifest of the replica fault tests: one small HTTP unit per deploy, so each deploy is a
stack of its own that a takeover must continue."""

from __future__ import annotations

from collections.abc import Sequence

UNIT = """\
  - name: {name}
    description: answers
    ports:
      - default->8080/http
"""


def echo_manifest(units: Sequence[str]) -> str:
    """The manifest of `units`, each answering HTTP on its default port, all in dev."""
    return (
        "units:\n"
        + "".join(UNIT.format(name=name) for name in units)
        + """\
plans:
  - name: default
    memory: 64
    health_checks:
      - name: alive
        port_reference: default
        protocol: http
        path: /
        timeout: 1s
        interval: 1s
namespaces:
  - name: dev
    units:
"""
        + "".join(f"      - ref: {name}\n        plans: [default]\n" for name in units)
    )
