"""Support hours and the reply-due time: the promise brought forward into the hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fte_agent import packs
from fte_agent.hours import ALWAYS_OPEN, HoursError, SupportHours

WEEKDAYS = SupportHours.parse(
    {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri"], "open": "08:00", "close": "18:00"}
)
# 2026-12-07 is a Monday.
MON = datetime(2026, 12, 7, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MON + timedelta(days=day, hours=hour, minutes=minute)


@pytest.mark.parametrize(
    ("since", "promise", "due"),
    [
        # Within hours on both ends: due at the promise.
        (at(0, 10), at(1, 10), at(1, 10)),
        # Promised for 20:00: due when Tuesday's hours close.
        (at(0, 20), at(1, 20), at(1, 18)),
        # Promised for 06:00 Wednesday: due at Tuesday's close.
        (at(1, 6), at(2, 6), at(1, 18)),
        # Friday evening, promised Saturday evening: no hours between, so Monday's opening.
        (at(4, 19), at(5, 19), at(7, 8)),
        # Friday at 17:00, promised Saturday: the last hour of Friday.
        (at(4, 17), at(5, 17), at(4, 18)),
    ],
)
def test_the_reply_is_due_at_the_last_support_hour_before_the_promise(
    since: datetime, promise: datetime, due: datetime
) -> None:
    assert WEEKDAYS.reply_due(since, promise) == due


def test_hours_in_a_time_zone_and_always_open() -> None:
    berlin = SupportHours.parse({"timezone": "Europe/Berlin", "days": ["mon"], "open": "09:00", "close": "17:00"})
    # Monday 18:00 UTC is 19:00 in Berlin (CET, UTC+1): closed since 16:00 UTC.
    assert berlin.reply_due(at(0, 7), at(0, 18)) == at(0, 16)
    assert ALWAYS_OPEN.reply_due(at(5, 3), at(6, 3)) == at(6, 3)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"days": ["funday"]}, "hours.days"),
        ({"days": []}, "hours.days"),
        ({"open": "9am"}, "not a time of day"),
        ({"open": "18:00", "close": "08:00"}, "after hours.open"),
    ],
)
def test_bad_hours_are_refused_with_the_reason(raw: dict[str, object], error: str) -> None:
    with pytest.raises(HoursError, match=error):
        SupportHours.parse(raw)


def test_the_packaged_playbook_has_weekday_hours() -> None:
    assert packs.playbook().hours == WEEKDAYS
