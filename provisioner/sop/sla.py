"""Working time: when a step's time standard runs out, and how late a step was.

Time runs only inside the office's working periods (per weekday, in the office's
time zone), never on Indonesian public holidays or cuti bersama, and never on
dates the office's editable calendar adds. Minutes and hours consume working
minutes; days and weeks (5 days) move to the same time on a later working day.
"""

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from provisioner import yamlsrc
from provisioner.errors import ConfigError
from provisioner.sop.holidays import IndonesianHolidays

WEEK_DAYS = 5
_MAX_DAYS_SCANNED = 3660  # a ten-year search means the calendar has no working days


class WorkCalendar:
    """Working periods of one office. All instants in and out are timezone-aware."""

    def __init__(self, tz, periods_by_weekday, added=None, removed=(), workdays=()):
        self.tz = tz
        self._periods = periods_by_weekday  # weekday -> [(time, time)]
        self._added = dict(added or {})
        self._removed = set(removed)
        self._workdays = set(workdays)
        self._day_periods = {}
        self._holidays = IndonesianHolidays()

    @classmethod
    def for_office(cls, office):
        added, removed, workdays = {}, set(), set()
        if office.calendar and Path(office.calendar).is_file():
            added, removed, workdays = _read_overrides(Path(office.calendar))
        return cls(office.tz, {d: office.periods(d) for d in range(7)}, added, removed, workdays)

    def holiday(self, day):
        """The holiday name if `day` is a holiday or cuti bersama, else None."""
        if day in self._added:
            return self._added[day]
        if day in self._removed:
            return None
        return self._holidays.get(day)

    def is_working_day(self, day):
        if day in self._workdays:
            return bool(self._periods_for(day))
        return bool(self._periods[day.weekday()]) and self.holiday(day) is None

    def _periods_for(self, day):
        # A weekend day made a working day works Monday's hours.
        periods = self._periods[day.weekday()] or self._periods[0]
        return periods if day in self._workdays else self._periods[day.weekday()]

    def periods(self, day):
        """Working periods of a date as aware datetimes (empty on a day off)."""
        # Kept per date: `provision sla` walks every day since each open request's deadline.
        if day not in self._day_periods:
            self._day_periods[day] = () if not self.is_working_day(day) else tuple(
                (datetime.combine(day, start, self.tz), datetime.combine(day, end, self.tz))
                for start, end in self._periods_for(day))
        return self._day_periods[day]

    def _days_from(self, day):
        for offset in range(_MAX_DAYS_SCANNED):
            yield day + timedelta(days=offset)
        raise ConfigError("the office calendar has no working day in ten years")

    def next_working_instant(self, moment):
        """`moment` if it is inside working time, else the start of the next period."""
        moment = moment.astimezone(self.tz)
        for day in self._days_from(moment.date()):
            for start, end in self.periods(day):
                if moment < end:
                    return max(moment, start)
        raise AssertionError("unreachable")

    def add_minutes(self, moment, minutes):
        """The instant after `minutes` of working time from `moment`."""
        remaining = timedelta(minutes=minutes)
        moment = self.next_working_instant(moment)
        for day in self._days_from(moment.date()):
            for start, end in self.periods(day):
                if end <= moment:
                    continue
                begin = max(start, moment)
                if begin + remaining <= end:
                    return begin + remaining
                remaining -= end - begin
        raise AssertionError("unreachable")

    def add_days(self, moment, days):
        """The same working time of day, `days` working days later.

        A start outside working time first moves to the next working instant,
        so a letter that arrives on Saturday starts its clock on Monday morning.
        When the target day closes earlier (Friday vs Monday hours), the
        deadline is that day's closing time.
        """
        moment = self.next_working_instant(moment)
        day, count = moment.date(), 0
        while count < days:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        periods = self.periods(day)
        target = datetime.combine(day, moment.time(), self.tz)
        return min(max(target, periods[0][0]), periods[-1][1])

    def deadline(self, start, standard):
        """When a step started at `start` with this TimeStandard must end; None if no standard."""
        if not standard.fixed:
            return None
        if standard.unit == "minutes":
            return self.add_minutes(start, standard.amount)
        if standard.unit == "hours":
            return self.add_minutes(start, standard.amount * 60)
        if standard.unit == "days":
            return self.add_days(start, standard.amount)
        return self.add_days(start, standard.amount * WEEK_DAYS)

    def working_minutes(self, start, end):
        """Working minutes between two instants (0 if end is not after start)."""
        if end <= start:
            return 0
        start, end = start.astimezone(self.tz), end.astimezone(self.tz)
        total = timedelta()
        for day in self._days_from(start.date()):
            if day > end.date():
                break
            for p_start, p_end in self.periods(day):
                overlap = min(p_end, end) - max(p_start, start)
                if overlap > timedelta():
                    total += overlap
        return int(total.total_seconds() // 60)


def _read_overrides(path):
    doc = yamlsrc.load(path.read_text(encoding="utf-8"))
    if doc.problems:
        raise ConfigError(f"{path}: {doc.problems[0]}")
    data = doc.data or {}
    try:
        added = {_as_date(k): str(v) for k, v in (data.get("add") or {}).items()}
        removed = {_as_date(d) for d in data.get("remove") or []}
        workdays = {_as_date(d) for d in data.get("workdays") or []}
    except (AttributeError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: add is a mapping of date: reason; remove and workdays "
                          f"are lists of dates ({err})") from None
    unknown = set(data) - {"add", "remove", "workdays"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    return added, removed, workdays


def _as_date(value):
    if isinstance(value, datetime):
        raise ValueError(f"{value} has a time")
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def format_minutes(minutes):
    """350 -> '5h 50m' (working time)."""
    hours, mins = divmod(int(minutes), 60)
    return f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def utcnow():
    return datetime.now(timezone.utc)
