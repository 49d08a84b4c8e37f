"""API tokens over random sequences of creations, revocations and API calls, some at once:
a token opens the API exactly while its name was created with it and not revoked since, only
within its scope, a name is never held twice, and no token is ever stored or audited."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage import open_store
from bot.conversation import Conversation, Outcome
from bot.http.api import Api, Refused
from commands.access import Principal, Role, authorize
from commands.context import Services
from commands.replies import Code
from commands.settings import Settings
from domain.api_tokens import digest
from tests.e2e.slack_harness import Scripted
from tests.fakes.clock import FakeClock

NAMES = ("a", "b", "c")
NAMESPACES = ("dev", "qa", "prod")
SETTINGS = Settings.model_validate({"namespaces": list(NAMESPACES), "access": {"admins": ["U9"]}})
ADMIN = Principal("U9")

step: st.SearchStrategy[tuple[str, str, list[str], str]] = st.one_of(
    st.tuples(
        st.just("create"),
        st.sampled_from(NAMES),
        st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2, unique=True),
        st.sampled_from(["view", "deploy"]),
    ),
    st.tuples(st.just("revoke"), st.sampled_from(NAMES), st.just([]), st.just("")),
    # several creations of one name at once: at most one wins
    st.tuples(st.just("race"), st.sampled_from(NAMES), st.just(["dev"]), st.just("deploy")),
)


class FakeRequest:
    """What Api.principal reads of a request."""

    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=12))
def test_tokens_open_exactly_what_they_should(
    steps: list[tuple[str, str, list[str], str]],
) -> None:
    asyncio.run(scenario(steps))


async def scenario(steps: list[tuple[str, str, list[str], str]]) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"sqlite:///{Path(tmp) / 'n.db'}", clock=clock)
        try:
            conversation = Conversation(Services(SETTINGS, store, Scripted(), clock))
            # only the API's authentication is exercised: it reads the store and settings
            api = Api(SimpleNamespace(store=store, settings=SETTINGS))  # type: ignore[arg-type]
            shown: dict[str, tuple[str, tuple[str, ...], str]] = {}  # token -> name, scope, right
            active: dict[str, str] = {}  # name -> its current token
            for kind, name, namespaces, right in steps:
                if kind == "revoke":
                    answer = await conversation.answer(f"token revoke {name}", ADMIN)
                    assert (answer.outcome is Outcome.OK) == (name in active)
                    active.pop(name, None)
                else:
                    text = f"token create {name} for {', '.join(namespaces)} can {right}"
                    tries = 3 if kind == "race" else 1
                    answers = await asyncio.gather(
                        *(conversation.answer(text, ADMIN) for _ in range(tries))
                    )
                    made = [a for a in answers if a.outcome is Outcome.OK]
                    assert len(made) == (0 if name in active else 1)
                    for answer in made:
                        token = next(b.text for b in answer.reply.blocks if isinstance(b, Code))
                        shown[token] = (name, tuple(namespaces), right)
                        active[name] = token
                # the invariants, after every step
                assert sorted(t.name for t in await store.api_tokens()) == sorted(active)
                for token, (owner, scope, may) in shown.items():
                    try:
                        who = await api.principal(FakeRequest(token))  # type: ignore[arg-type]
                    except Refused:
                        assert active.get(owner) != token
                        continue
                    assert active.get(owner) == token
                    assert who.user_id == f"token:{owner}"
                    for namespace in NAMESPACES:
                        for role in (Role.VIEW, Role.DEPLOY, Role.APPROVE, Role.ADMIN):
                            allowed = authorize(SETTINGS.access, who, role, namespace).allowed
                            expected = namespace in scope and (
                                role is Role.VIEW or (role is Role.DEPLOY and may == "deploy")
                            )
                            assert allowed == expected
            for event in await store.audit_events(limit=1000):
                assert not any(t in event.detail + event.target for t in shown)
            stored = {t.digest for t in await store.api_tokens()}
            assert stored == {digest(t) for t in active.values()}
        finally:
            await store.close()
