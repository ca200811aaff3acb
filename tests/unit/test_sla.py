from datetime import date, datetime

import pytest

from provisioner.config import Office, default_offices
from provisioner.sop.model import TimeStandard
from provisioner.sop.sla import WorkCalendar

from conftest import WITA


@pytest.fixture
def cal():
    return WorkCalendar.for_office(default_offices()["tarakan"])


def at(*args):
    return datetime(*args, tzinfo=WITA)


def test_library_holidays_and_cuti_bersama(cal):
    assert cal.holiday(date(2024, 12, 25))  # Natal, a Wednesday
    assert "Cuti Bersama" in cal.holiday(date(2024, 5, 10))  # after Ascension Day
    assert not cal.is_working_day(date(2024, 5, 9))
    assert not cal.is_working_day(date(2024, 8, 17))  # a Saturday and a holiday
    assert cal.is_working_day(date(2024, 5, 8))


def test_minutes_run_in_office_hours_and_cross_the_weekend(cal):
    # Friday 16:20: 10 minutes left that day (Friday closes 16:30); 20 more on Monday.
    assert cal.add_minutes(at(2024, 8, 23, 16, 20), 30) == at(2024, 8, 26, 7, 50)
    # A start on Saturday begins on Monday morning.
    assert cal.add_minutes(at(2024, 8, 24, 10, 0), 5) == at(2024, 8, 26, 7, 35)


def test_days_skip_weekend_and_public_holiday(cal):
    # Tue 2024-12-24 10:00 + 2 Hari: Wed 25 Natal and Thu 26 cuti bersama are off,
    # then Fri 27 (1), Sat/Sun off, Mon 30 (2).
    assert cal.deadline(at(2024, 12, 24, 10, 0), TimeStandard("2 Hari", 2, "days")) == at(2024, 12, 30, 10, 0)
    # Wed 2024-05-08 09:00 + 2 Hari: Thu 9 Ascension, Fri 10 cuti bersama, weekend -> Mon 13, Tue 14.
    assert cal.deadline(at(2024, 5, 8, 9, 0), TimeStandard("2 Hari", 2, "days")) == at(2024, 5, 14, 9, 0)


def test_week_is_five_working_days(cal):
    assert cal.deadline(at(2024, 8, 12, 9, 0), TimeStandard("1 minggu", 1, "weeks")) == at(2024, 8, 19, 9, 0)


def test_friday_late_start_is_clamped_to_monday_close(cal):
    assert cal.add_days(at(2024, 8, 23, 16, 15), 1) == at(2024, 8, 26, 16, 0)


def test_working_minutes_between(cal):
    # Fri 16:00 -> Mon 08:00: 30 minutes on Friday, 30 on Monday.
    assert cal.working_minutes(at(2024, 8, 23, 16, 0), at(2024, 8, 26, 8, 0)) == 60
    assert cal.working_minutes(at(2024, 12, 24, 15, 0), at(2024, 12, 27, 8, 30)) == 120


def test_no_standard_has_no_deadline(cal):
    assert cal.deadline(at(2024, 8, 12, 9, 0), TimeStandard("tergantung besar kecilnya sistem/aplikasi")) is None


def test_editable_calendar_adds_and_removes(tmp_path):
    overrides = tmp_path / "cal.yaml"
    overrides.write_text("add:\n  2024-08-20: Cuti daerah\nremove:\n  - 2024-12-25\nworkdays: [2024-08-24]\n")
    office = Office(**dict(default_offices()["tarakan"].model_dump(), calendar=overrides))
    cal = WorkCalendar.for_office(office)
    assert cal.holiday(date(2024, 8, 20)) == "Cuti daerah" and not cal.is_working_day(date(2024, 8, 20))
    assert cal.is_working_day(date(2024, 12, 25))
    assert cal.is_working_day(date(2024, 8, 24))  # a Saturday made a working day
