"""Indonesia's holidays kept per library version: the same dates as the library, read back
without importing it, and recomputed when the file is missing, damaged or another version's."""

import json
from datetime import date

import holidays
import pytest

from provisioner.sop import holidays as kept_holidays
from provisioner.sop.holidays import IndonesianHolidays

YEARS = (2024, 2025, 2026)


@pytest.fixture
def library():
    return holidays.country_holidays("ID", categories=("public", "government"), language="id", years=YEARS)


def _every_day(year):
    day = date(year, 1, 1)
    while day.year == year:
        yield day
        day = date.fromordinal(day.toordinal() + 1)


def _no_library(monkeypatch):
    def refuse(self, year):
        raise AssertionError(f"the library was asked for {year}")

    monkeypatch.setattr(IndonesianHolidays, "_compute", refuse)


def test_every_day_of_a_year_is_what_the_library_says_computed_and_read_back(tmp_path, library, monkeypatch):
    computed = IndonesianHolidays(tmp_path)
    assert [computed.get(d) for y in YEARS for d in _every_day(y)] == [library.get(d) for y in YEARS
                                                                       for d in _every_day(y)]
    assert computed.get(date(2024, 12, 25)) and "Cuti Bersama" in computed.get(date(2024, 5, 10))
    (kept,) = tmp_path.iterdir()
    assert kept.name == f"holidays-{holidays.__version__}-ID-public+government-id.json"
    assert sorted(json.loads(kept.read_text())["years"]) == [str(y) for y in YEARS]

    _no_library(monkeypatch)  # a later run reads the file alone
    read = IndonesianHolidays(tmp_path)
    assert [read.get(d) for y in YEARS for d in _every_day(y)] == [library.get(d) for y in YEARS
                                                                   for d in _every_day(y)]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"library": "0.1", "years": {"2024": {}}}),
                                     json.dumps({"library": holidays.__version__, "years": {"2024": ["x"]}}),
                                     json.dumps({"library": holidays.__version__, "years": {"2024": {"x": 1}}}),
                                     json.dumps([1, 2])],
                         ids=["not JSON", "another version", "a year not a mapping", "not a date", "not a mapping"])
def test_a_damaged_or_foreign_file_is_computed_again_and_replaced(tmp_path, library, content):
    path = IndonesianHolidays(tmp_path)._path
    path.write_text(content)
    assert IndonesianHolidays(tmp_path).get(date(2024, 12, 25)) == library.get(date(2024, 12, 25))
    assert IndonesianHolidays(tmp_path).get(date(2024, 12, 26)) == library.get(date(2024, 12, 26))
    assert "2024" in json.loads(path.read_text())["years"]


def test_a_cache_that_cannot_be_written_costs_only_the_time(tmp_path, library):
    blocked = tmp_path / "file"
    blocked.write_text("")  # the cache directory cannot be made under a file
    assert IndonesianHolidays(blocked / "cache").get(date(2024, 12, 25)) == library.get(date(2024, 12, 25))


def test_the_cache_lives_under_the_users_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kept_holidays.cache_directory() == tmp_path / "provisioner"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the specification says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kept_holidays.cache_directory() == tmp_path / "home" / ".cache" / "provisioner"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kept_holidays.cache_directory() == tmp_path / "home" / ".cache" / "provisioner"


def test_a_user_without_a_home_keeps_nothing(tmp_path, library, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(kept_holidays.os.path, "expanduser", lambda path: path)  # no passwd entry either
    monkeypatch.chdir(tmp_path)
    assert kept_holidays.cache_directory() is None
    assert IndonesianHolidays().get(date(2024, 12, 25)) == library.get(date(2024, 12, 25))
    assert list(tmp_path.iterdir()) == []  # no "~" directory made where the command ran


def test_without_the_librarys_version_nothing_is_kept_or_trusted(tmp_path, library, monkeypatch):
    monkeypatch.setattr(kept_holidays, "library_version", lambda: "")
    days = IndonesianHolidays(tmp_path)
    assert days.get(date(2024, 12, 25)) == library.get(date(2024, 12, 25))
    assert list(tmp_path.iterdir()) == []
