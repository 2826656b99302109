"""Support hours (the playbook's `[hours]`) and when a person's reply is due.

The customer is promised a follow-up by a wall-clock time; people answer only within support
hours. So a reply is due at the last moment of support hours at or before the promise; when no
support hours fall between the escalation and the promise (a short promise over a weekend), it is
due at the first opening after the escalation, the earliest anyone can keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far to look for an opening: a week of days covers any set of weekdays.
_HORIZON_DAYS = 8


class HoursError(ValueError):
    """A playbook `[hours]` table that cannot be used."""


@dataclass(frozen=True, slots=True)
class SupportHours:
    zone: ZoneInfo
    days: frozenset[int]  # 0 = Monday
    opens: time
    closes: time  # time.max for the end of the day

    @classmethod
    def parse(cls, raw: dict[str, object]) -> SupportHours:
        try:
            zone = ZoneInfo(str(raw.get("timezone", "UTC")))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise HoursError(f"hours.timezone: unknown time zone {raw.get('timezone')!r}") from exc
        names = raw.get("days", list(DAYS))  # no `[hours]`: always open, due at the promise
        if not isinstance(names, list) or not names or any(str(d).lower() not in DAYS for d in names):
            raise HoursError(f"hours.days: a non-empty list of {', '.join(DAYS)}")
        opens, closes = _clock(raw.get("open", "00:00"), "open"), _clock(raw.get("close", "24:00"), "close")
        if closes <= opens:
            raise HoursError("hours.close must be after hours.open")
        return cls(zone, frozenset(DAYS.index(str(d).lower()) for d in names), opens, closes)

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        if day.weekday() not in self.days:
            return None
        start = datetime.combine(day, self.opens, self.zone)
        end = (
            datetime.combine(day + timedelta(days=1), time(0), self.zone)
            if self.closes == time.max
            else datetime.combine(day, self.closes, self.zone)
        )
        return start, end

    def reply_due(self, since: datetime, promise: datetime) -> datetime:
        """When a reply is due for a ticket escalated at `since` with a follow-up promised by
        `promise` (both aware)."""
        last = promise.astimezone(self.zone).date()
        first = since.astimezone(self.zone).date()
        day = last
        while day >= first:
            window = self._window(day)
            if window is not None and window[0] <= promise:
                due = min(promise, window[1])
                if due > since:
                    return due
            day -= timedelta(days=1)
        for offset in range(_HORIZON_DAYS):
            window = self._window(first + timedelta(days=offset))
            if window is not None and window[1] > since:
                return max(since, window[0])
        return promise  # unreachable with at least one weekday


def _clock(value: object, field: str) -> time:
    text = str(value)
    if text == "24:00":
        return time.max
    try:
        return time.fromisoformat(text)
    except ValueError as exc:
        raise HoursError(f"hours.{field}: {text!r} is not a time of day (HH:MM)") from exc


# Hours that never close: the reply is due at the promise itself.
ALWAYS_OPEN = SupportHours.parse({})
