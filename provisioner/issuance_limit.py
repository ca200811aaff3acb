"""The CA's weekly limit of new certificates per registered domain, counted on our side.

Let's Encrypt allows 50 new certificates per registered domain per rolling 7 days, and
a whole city's sites share one registered domain (tarakankota.go.id under the public
suffix go.id). The toolkit records the time of each certificate it obtains under each
registered domain and asks `check` before starting an order, so it never starts one
the CA would refuse and can say when the next slot opens.

Pure: the caller supplies the recorded times (`Ledger`), the limit and now. Which
orders are counted is the caller's choice; counting every one, renewals included, is
the safe reading (the CA's renewal exemption has changed over time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WINDOW = dt.timedelta(days=7)
LETS_ENCRYPT_LIMIT = 50

# Recorded issuance times (aware datetimes) per registered domain.
Ledger = Mapping[str, Sequence[dt.datetime]]


@dataclass(frozen=True)
class Slot:
    registered_domain: str
    allowed: bool
    used: int  # issuances counted in the window ending now
    limit: int
    next_slot: dt.datetime  # now when allowed; else when the count first drops below the limit


def registered_domain(fqdn: str, registered_domains: Iterable[str]) -> str:
    """The office's registered domain that `fqdn` is under (the longest that matches).

    The office configures its registered domains (its zones' parents under a public
    suffix) rather than the toolkit shipping the public suffix list.
    """
    name = fqdn.lower().rstrip(".")
    matches = [d.lower().rstrip(".") for d in registered_domains
               if name == d.lower().rstrip(".") or name.endswith("." + d.lower().rstrip("."))]
    if not matches:
        raise ValueError(f"{fqdn} is under none of the registered domains {sorted(registered_domains)}")
    return max(matches, key=len)


def check(ledger: Ledger, domain: str, limit: int, now: dt.datetime, window: dt.timedelta = WINDOW) -> Slot:
    """May one more certificate under `domain` be ordered at `now`?

    An issuance at time t counts while now < t + window (so it stops counting exactly one
    window later). Times after now still count: a clock that moved back must not free slots.
    """
    if limit < 1:
        raise ValueError("the limit must be at least 1")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    counted = sorted(t for t in ledger.get(domain, ()) if now < t + window)
    if len(counted) < limit:
        return Slot(domain, True, len(counted), limit, now)
    # Below the limit again once all but limit-1 of them have left the window: the
    # (len - limit)-th oldest is the last one that has to go.
    opens = counted[len(counted) - limit] + window
    return Slot(domain, False, len(counted), limit, opens)


def check_names(ledger: Ledger, names: Iterable[str], registered_domains: Iterable[str], limit: int,
                now: dt.datetime, window: dt.timedelta = WINDOW) -> list[Slot]:
    """One Slot per registered domain a certificate for `names` counts against (once each,
    however many of its names are under it); the order may start only if every one allows it."""
    domains = list(registered_domains)
    under = sorted({registered_domain(n, domains) for n in names})
    return [check(ledger, d, limit, now, window) for d in under]
