"""Indonesia's public holidays and cuti bersama, year by year, from the `holidays` library.

Importing the library loads every country it knows (about 0.1 s here), more than
the rest of `provision sla`. A year's dates never change for one version of the
library, so each year it computes is kept in a JSON file named after that
version, in the user's cache directory, and later runs read it from there. A
missing, unreadable or foreign file is computed again; a cache that cannot be
written costs only the time.
"""

import json
import os
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from provisioner.files import write_atomic

COUNTRY = "ID"
CATEGORIES = ("public", "government")  # cuti bersama are the government's
LANGUAGE = "id"


def cache_directory() -> Path | None:
    """$XDG_CACHE_HOME/provisioner, else ~/.cache/provisioner; None for a user without a home
    (a service account): nothing is kept then. A relative $XDG_CACHE_HOME is ignored, as its
    specification says."""
    configured = Path(os.environ.get("XDG_CACHE_HOME") or ".")
    if configured.is_absolute():
        return configured / "provisioner"
    home = Path(os.path.expanduser("~"))  # "~" itself when the user has neither $HOME nor a passwd entry
    return home / ".cache" / "provisioner" if home.is_absolute() else None


def library_version() -> str:
    try:
        return version("holidays")
    except PackageNotFoundError:  # run from a source tree without its metadata: never trust a file
        return ""


class IndonesianHolidays:
    """`get(day)`: the holiday's name (several joined by "; ", as the library gives them), or None."""

    def __init__(self, directory: Path | None = None):
        self._version = library_version()
        directory = directory or cache_directory()
        name = f"holidays-{self._version}-{COUNTRY}-{'+'.join(CATEGORIES)}-{LANGUAGE}.json"
        self._path = directory / name if directory and self._version else None
        self._years: dict[int, dict[date, str]] = {}
        self._library = None

    def get(self, day: date) -> str | None:
        if day.year not in self._years:
            self._years[day.year] = self._year(day.year)
        return self._years[day.year].get(day)

    def _year(self, year: int) -> dict[date, str]:
        kept = self._read()
        try:
            return {date.fromisoformat(d): str(name) for d, name in kept[str(year)].items()}
        except (KeyError, AttributeError, TypeError, ValueError):  # not kept, or not as this module writes it
            pass
        computed = self._compute(year)
        kept[str(year)] = {d.isoformat(): name for d, name in sorted(computed.items())}
        self._write(kept)
        return computed

    def _compute(self, year: int) -> dict[date, str]:
        if self._library is None:
            import holidays

            self._library = holidays.country_holidays(COUNTRY, categories=CATEGORIES, language=LANGUAGE)
        self._library.get(date(year, 1, 1))  # the library fills in a year when first asked about it
        return {d: self._library.get(d) for d in self._library if d.year == year}

    def _read(self) -> dict:
        if self._path is None:
            return {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("library") != self._version or not isinstance(
                data.get("years"), dict):
            return {}
        return data["years"]

    def _write(self, years: dict) -> None:
        if self._path is None:
            return
        data = json.dumps({"library": self._version, "years": years}, ensure_ascii=False, sort_keys=True)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # A reader sees the old file or the new, never half of one.
            write_atomic(self._path, data.encode("utf-8"))
        except OSError:
            pass
