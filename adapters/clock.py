"""The one clock of the program: the only place that reads the wall clock.

`bot.bootstrap` builds one `SystemClock` and hands it to every component that reads the time
(the store, the workflow, traffic, approvals, the lifecycle, the Slack front end), so that
every timestamp written and every judgement made agree; tests hand a fake clock instead.
Durations measured in-process (timeouts, rate limits) use `time.monotonic`, which is not a
date and so not a clock in this sense."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)  # noqa: TID251 - the one reading of the wall clock
