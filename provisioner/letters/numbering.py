"""Letter numbers: a running number per office and year, given once and never freed.

A number is taken by one INSERT ... SELECT max+1 in its own transaction, before
anything is rendered; the unique (office, year, number) makes two racing
writers collide, and the loser tries again. That holds on PostgreSQL under
READ COMMITTED too: both may compute the same max, but the second INSERT waits
on the first's index entry and fails once it commits, so numbers stay unique
and gapless (tests/unit/test_letters.py races processes on both backends).
The row names the request and the kind of letter, so a rerun for the same
letter finds and keeps its number, and a render that fails afterwards leaves
the number taken (the migration refuses UPDATE and DELETE on the table).
"""

import random
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, literal, select
from sqlalchemy.exc import IntegrityError, OperationalError

from provisioner.errors import StateError
# The kinds live in kinds.py (no SQLAlchemy there, for the SOP checks); named here too, as before.
from provisioner.letters.kinds import KIND_MAX, KINDS, REPORT_PREFIX, known_kind, number_kind  # noqa: F401
from provisioner.store.events import add_event
from provisioner.store.models import LetterNumber, UTCDateTime

MAX_TRIES = 50


@dataclass(frozen=True)
class Issued:
    office: str
    year: int
    number: int
    request_id: str
    kind: str
    issued_at: datetime
    new: bool  # False when the request already had this letter's number

    def text(self, profile) -> str:
        """The number as printed, from the office's pattern: 400.14/7/DKISP/2026."""
        return profile.number_pattern.format(klasifikasi=profile.classification, urut=self.number,
                                             tahun=self.year)


def _issued(row: LetterNumber, new: bool) -> Issued:
    return Issued(row.office, row.year, row.number, row.request_id, row.kind, row.issued_at, new)


def find(store, request_id: str, kind: str) -> Issued | None:
    with store.session() as session:
        row = session.scalars(select(LetterNumber).where(
            LetterNumber.request_id == request_id, LetterNumber.kind == kind)).first()
        return _issued(row, new=False) if row is not None else None


def allocate(store, office_key: str, request_id: str, kind: str, now: datetime, tz,
             source: str = "cli") -> Issued:
    """The number of a request's letter of `kind`: the one it already has, or the next free one."""
    kind = number_kind(kind)
    if not known_kind(kind):
        raise ValueError(f"unknown letter kind {kind!r}")
    year = now.astimezone(tz).year
    for attempt in range(MAX_TRIES):
        have = find(store, request_id, kind)
        if have is not None:
            return have
        following = func.coalesce(func.max(LetterNumber.number), 0) + 1
        statement = insert(LetterNumber).from_select(
            ["office", "year", "number", "request_id", "kind", "issued_at"],
            select(literal(office_key), literal(year), following, literal(request_id), literal(kind),
                   literal(now, UTCDateTime())).where(LetterNumber.office == office_key,
                                                       LetterNumber.year == year))
        try:
            with store.session() as session:
                session.execute(statement)
                row = session.scalars(select(LetterNumber).where(
                    LetterNumber.request_id == request_id, LetterNumber.kind == kind)).one()
                add_event(session, request_id, "letter_number_issued", source=source, office=office_key,
                          year=year, number=row.number, letter=kind)
                issued = _issued(row, new=True)
            return issued
        except IntegrityError:
            pass  # another writer took that number (or this very letter): look again
        except OperationalError as err:
            if "locked" not in str(err.orig).lower() and "deadlock" not in str(err.orig).lower():
                raise
        time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
    raise StateError(f"{request_id}: no letter number could be taken after {MAX_TRIES} tries; "
                     f"the state database is too busy, try again")
