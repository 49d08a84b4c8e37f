"""The one fake clock of the tests: frozen at a given instant unless told to tick, moved
forward by `advance` instead of sleeping through grace periods."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

# An arbitrary instant, far from the day the suite runs: tests must not depend on the date.
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class FakeClock:
    """`now()` is `start` plus whatever `advance` added; with `ticking=True` it also moves
    with real (monotonic) time, for code that waits on real servers while the test skips
    ahead through graces."""

    def __init__(self, start: datetime = T0, *, ticking: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("the fake clock needs an aware datetime")
        self._start = start
        self._offset = timedelta()
        self._ticking = ticking
        self._origin = time.monotonic()

    def now(self) -> datetime:
        now = self._start + self._offset
        if self._ticking:
            now += timedelta(seconds=time.monotonic() - self._origin)
        return now

    def advance(self, by: timedelta | float) -> datetime:
        self._offset += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self.now()

    def set(self, at: datetime) -> None:
        """Jump to `at` (forward or back, as a test that replays a story needs)."""
        self._offset += at - self.now()
