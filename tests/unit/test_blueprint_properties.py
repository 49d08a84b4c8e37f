"""Whatever text a plan's environment holds, the default Nomad blueprint carries it to the job
exactly: values are written as JSON, which YAML reads back unchanged."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.scheduler.nomad_job import job_for
from tests.unit.test_blueprints import SPEC

names = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: not n.startswith(("NELSON_", "PORT"))
)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)


@settings(max_examples=200, deadline=None)
@given(environment=st.dictionaries(names, values, max_size=6))
def test_any_environment_reaches_the_job_unchanged(environment: dict[str, str]) -> None:
    spec = dataclasses.replace(SPEC, environment=tuple(environment.items()))
    env = job_for(spec, "west")["TaskGroups"][0]["Tasks"][0]["Env"]
    assert {k: env[k] for k in environment} == environment
    assert env["NELSON_STACKNAME"] == SPEC.stack
