"""`provision tls status` and `provision tls renew`: the sites' certificates as served, and their renewal.

status() compares, for every recorded TLS site, the certificate a client sees
from outside with the one recorded for it.

renew() plans by default: the sites due are those whose certificate expires
within `renew_within_days` (or `--within`), or whose served certificate is not
the recorded one, not trusted, or does not cover the name. The soonest expiry
goes first, at most `max_renewals` a run (the rest wait for the next run), and
an order the CA's weekly limit would refuse is not started (the plan says when
the next slot opens). With apply: all orders go to the CA together, the
certificates obtained are installed by ONE web role run (one configtest and one
graceful reload per web host: no request fails during the reload), and each is
checked from outside before it is recorded active. A site whose order, install
or check fails keeps its old certificate serving and gets a `tls_renewal_failed`
event saying why; being still due, it is tried again on the next run. One site's
failure never stops the others, and nothing here raises for it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from sqlalchemy import select

from provisioner import certificates, locks
from provisioner.changes import Update
from provisioner.errors import ProvisionerError, StateError
from provisioner.hosting import Hosting, as_error
from provisioner.plan import Plan
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import Event, SiteRow
from provisioner.targets import web as web_target

# Sites whose certificate is served and renewed (the audit's states).
RENEWED_STATES = ("provisioned", "suspended")
TLS_DIR = "/etc/ssl/provisioner"
# After the graceful reload, how long the new certificate may take to be served
# (apache2ctl returns before every child has restarted).
SERVED_WAIT = 15.0


# --- what is recorded and served ----------------------------------------------


def _sites(store, site: str | None) -> list[SiteRow]:
    """The recorded sites with TLS (one, with `site`), by name."""
    with store.session() as session:
        query = select(SiteRow).where(SiteRow.state.in_(RENEWED_STATES))
        if site:
            query = query.where(SiteRow.fqdn == site)
        # An adopted site's certificate is the office's own until the site is normalized.
        rows = [r for r in session.scalars(query.order_by(SiteRow.fqdn))
                if (r.config or {}).get("tls") and (r.config or {}).get("origin") != "adopted"]
    if site and not rows:
        raise StateError(f"{site} is not a provisioned or suspended site with TLS in the records")
    return rows


def _served(work: Hosting, row: SiteRow) -> tuple[dict | None, str | None]:
    """(the certificate served for the site, None) or (None, why nothing answers)."""
    if not row.public_ip:
        return None, "no public address recorded"
    try:
        return certificates.served(row.public_ip, row.fqdn, work.ca_file()), None
    except ProvisionerError as err:
        return None, str(err)


def _days_left(not_after: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if not_after is None else round((not_after - now).total_seconds() / 86400, 1)


def _last_events(store, kinds: tuple[str, ...]) -> dict[tuple[str, str], Event]:
    """The newest event of each kind, by (kind, fqdn)."""
    with store.session() as session:
        events = session.scalars(select(Event).where(Event.kind.in_(kinds)).order_by(Event.id)).all()
    return {(e.kind, e.payload.get("fqdn")): e for e in events}


def _last_failure(last: dict, fqdn: str) -> dict | None:
    """The last renewal failure of a site, unless a renewal succeeded after it."""
    failed = last.get(("tls_renewal_failed", fqdn))
    renewed = last.get(("certificate_renewed", fqdn))
    if failed is None or (renewed is not None and renewed.id > failed.id):
        return None
    return {"at": failed.at.isoformat(), "reason": failed.payload.get("reason"),
            "serial": failed.payload.get("serial")}


def status(config, store, site: str | None = None) -> list[dict]:
    """Every recorded TLS site's certificate as served from outside, against the record.

    Nothing answering is reported in `error`, not raised: status is a report.
    """
    work = Hosting(config, store)
    now = utcnow()
    last = _last_events(store, ("tls_renewal_failed", "certificate_renewed"))
    out = []
    for row in _sites(store, site):
        served, error = _served(work, row)
        current = work.certs.current(row.fqdn)
        recorded = None
        if current is not None:
            recorded = {"serial": current.serial, "state": current.state, "source": current.source,
                        "issuer": current.issuer, "not_after": current.not_after.isoformat(),
                        "days_left": _days_left(current.not_after, now)}
        in_record = (row.config or {}).get("certificate")
        expected = current.serial if current is not None else (in_record or {}).get("serial")
        out.append({
            "fqdn": row.fqdn, "state": row.state, "web_host": row.web_host, "public_ip": row.public_ip,
            "served": served, "error": error, "recorded": recorded, "record_certificate": in_record,
            "matches": None if served is None or expected is None else served["serial"] == expected,
            "last_failure": _last_failure(last, row.fqdn),
        })
    return out


# --- planning -----------------------------------------------------------------


@dataclass
class Due:
    """One site the renewal considers: what it has now and why it is due."""

    fqdn: str
    web_host: str
    request_id: str
    serial: str | None  # the certificate serving now (recorded, else served)
    not_after: dt.datetime | None
    days_left: float | None
    reason: str
    reuse: bool = False  # install the recorded certificate again: no new order
    note: str | None = None  # why it is not renewed this run (deferred, refused)

    def as_dict(self) -> dict:
        return {"fqdn": self.fqdn, "web_host": self.web_host, "serial": self.serial,
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": self.days_left, "reason": self.reason,
                "action": "install the recorded certificate" if self.reuse else "order a new certificate",
                **({"note": self.note} if self.note else {})}


@dataclass
class RenewalPlan:
    within: int
    due: list[Due] = field(default_factory=list)  # renewed by this run, soonest expiry first
    deferred: list[Due] = field(default_factory=list)  # over the cap: the next run
    refused: list[Due] = field(default_factory=list)  # the CA's limit: not ordered, note says when
    unknown: dict[str, str] = field(default_factory=dict)  # fqdn -> why it could not be judged
    checked: int = 0  # TLS sites looked at

    @property
    def plan(self) -> Plan:
        """The due renewals as a Plan (its checksum binds --apply; the audit's --fix merges it)."""
        changes = [Update("web", d.web_host, d.fqdn, "TLS certificate", f"{TLS_DIR}/{d.fqdn}.crt",
                          reason=d.reason, serial=d.serial,
                          not_after=d.not_after.isoformat() if d.not_after else None,
                          renewal="install recorded" if d.reuse else "order")
                   for d in self.due]
        held = self.deferred + self.refused
        return Plan(changes=changes, sites=[d.fqdn for d in self.due + held],
                    notes={d.fqdn: d.note for d in held})

    @property
    def checksum(self) -> str:
        return self.plan.checksum

    def as_dict(self) -> dict:
        return {"within_days": self.within, "checked": self.checked, "checksum": self.checksum,
                "due": [d.as_dict() for d in self.due], "deferred": [d.as_dict() for d in self.deferred],
                "refused": [d.as_dict() for d in self.refused], "unknown": self.unknown}

    def render(self) -> str:
        lines = [f"{self.checked} TLS site(s) checked; due: certificates expiring within {self.within} days, "
                 "or served not as recorded"]
        if self.due:
            lines.append(f"{'site':<40} {'web host':<10} {'serial':<20} {'not after':<20} {'days':>6}  reason")
            for d in self.due:
                lines.append(f"{d.fqdn:<40} {d.web_host:<10} {(d.serial or '-')[:20]:<20} "
                             f"{d.not_after.strftime('%Y-%m-%d %H:%M') if d.not_after else '-':<20} "
                             f"{d.days_left if d.days_left is not None else '-':>6}  {d.reason}"
                             + ("; the recorded certificate is installed again" if d.reuse else ""))
        else:
            lines.append("no certificate is due")
        for d in self.deferred + self.refused:
            lines.append(f"{d.fqdn}: not this run: {d.note}")
        for fqdn, why in sorted(self.unknown.items()):
            lines.append(f"{fqdn}: cannot be judged: {why}")
        lines.append(f"checksum {self.checksum}")
        return "\n".join(lines) + "\n"


def _why_due(row: SiteRow, current, served: dict | None, within: int, forced: bool,
             now: dt.datetime) -> str | None:
    """Why a site's certificate is due, or None."""
    if forced:
        return "renewal asked for (forced)"
    not_after = current.not_after if current is not None else (
        dt.datetime.fromisoformat(served["not_after"]) if served else None)
    if not_after is not None and not_after - now <= dt.timedelta(days=within):
        return "expired" if not_after <= now else f"expires within {within} days"
    if served is None:
        return None
    expected = current.serial if current is not None else ((row.config or {}).get("certificate") or {}).get("serial")
    if expected is not None and served["serial"] != expected:
        return f"the served certificate ({served['serial']}) is not the recorded one ({expected})"
    if not served["covers"]:
        return f"the served certificate does not cover {row.fqdn}"
    if not served["trusted"]:
        return f"the served certificate is not trusted: {served['trust_error']}"
    return None


def plan_renewals(work: Hosting, site: str | None = None, within: int | None = None,
                  force_sites=None) -> RenewalPlan:
    """Which certificates this run renews, which wait for the next run, and why."""
    settings = work.config.hosting.acme
    within = settings.renew_within_days if within is None else within
    if within < 0:
        raise StateError(f"--within: {within} is not a number of days (0 or more)")
    forced = set(force_sites or ())
    now = utcnow()
    out = RenewalPlan(within=within)
    candidates = []
    for row in _sites(work.store, site):
        out.checked += 1
        current = work.certs.current(row.fqdn)
        served, error = _served(work, row)
        if current is None and served is None:
            out.unknown[row.fqdn] = error
            continue
        why = _why_due(row, current, served, within, row.fqdn in forced, now)
        if why is None:
            continue
        not_after = current.not_after if current is not None else dt.datetime.fromisoformat(served["not_after"])
        serial = current.serial if current is not None else served["serial"]
        # A good recorded certificate that is not the one served (an apply that failed after
        # obtaining it) is installed again: no order, which the CA's weekly limit makes costly.
        reuse = (row.fqdn not in forced and current is not None and served is not None
                 and served["serial"] != current.serial and work.certs.reusable(row.fqdn) is not None
                 and current.not_after - now > dt.timedelta(days=within))
        candidates.append(Due(fqdn=row.fqdn, web_host=row.web_host, request_id=row.request_id, serial=serial,
                              not_after=not_after, days_left=_days_left(not_after, now), reason=why, reuse=reuse))
    candidates.sort(key=lambda d: (d.not_after is None, d.not_after or now, d.fqdn))
    ordering: list[str] = []
    for item in candidates:
        if len(out.due) >= settings.max_renewals:
            item.note = f"deferred to the next run: at most {settings.max_renewals} renewals a run"
            out.deferred.append(item)
            continue
        if not item.reuse:
            # Earlier orders of this run count against the later ones.
            slot = work.certs.slots(ordering + [item.fqdn])[item.fqdn]
            if slot is not None:
                item.note = (f"the CA's limit for {slot.registered_domain} is reached ({slot.used} of "
                             f"{slot.limit} certificates in 7 days); the next slot opens at "
                             f"{slot.next_slot:%Y-%m-%d %H:%M} UTC")
                out.refused.append(item)
                continue
            ordering.append(item.fqdn)
        out.due.append(item)
    return out


# --- renewing -----------------------------------------------------------------


@dataclass
class RenewalResult:
    plan: RenewalPlan
    applied: bool = False
    renewed: list[dict] = field(default_factory=list)  # fqdn, old_serial, serial, not_after
    failed: dict[str, str] = field(default_factory=dict)  # fqdn -> why (the old certificate still serves)
    busy: dict[str, str] = field(default_factory=dict)  # fqdn -> another apply holds it; the next run

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        return {"applied": self.applied, "plan": self.plan.as_dict(), "renewed": self.renewed,
                "failed": self.failed, "busy": self.busy}


def renew(config, store, *, site: str | None = None, within: int | None = None, apply: bool = False,
          checksum: str | None = None, force_sites=None, jitter: float = 0, source: str = "cli") -> RenewalResult:
    """Plan the renewals; with `apply`, renew, install and check them (see the module's docstring)."""
    if apply and jitter > 0:
        # Daily runs of many offices would otherwise all reach the CA at the same minute.
        time.sleep(random.uniform(0, jitter))
    work = Hosting(config, store, source=source)
    planned_at = utcnow()
    planned = plan_renewals(work, site=site, within=within, force_sites=force_sites)
    if checksum and planned.checksum != checksum:
        raise StateError(f"the renewal plan changed since it was reviewed (checksum {planned.checksum}, "
                         f"expected {checksum}); review it again")
    result = RenewalResult(plan=planned, applied=apply)
    if not apply or not planned.due:
        return result
    with ExitStack() as stack:
        # Site by site: one site in another apply waits for the next run, the others go on.
        mine = []
        for item in planned.due:
            try:
                stack.enter_context(locks.held(store, [f"site:{item.fqdn}"]))
            except StateError as err:
                result.busy[item.fqdn] = str(err)
                continue
            # Planned before the lock: a run that held it may have renewed the site meanwhile.
            current = work.certs.current(item.fqdn)
            if item.serial and current is not None and current.serial != item.serial \
                    and current.issued_at > planned_at:
                result.busy[item.fqdn] = f"renewed by another run meanwhile (now {current.serial})"
                continue
            mine.append(item)
        _renew(work, mine, result)
    return result


def _failed(work: Hosting, item: Due, result: RenewalResult, reason: str, stage: str,
            new_serial: str | None = None) -> None:
    result.failed[item.fqdn] = reason
    with work.store.session() as session:
        add_event(session, item.request_id, "tls_renewal_failed", source=work.source, fqdn=item.fqdn,
                  reason=reason, stage=stage, serial=item.serial,
                  **({"new_serial": new_serial} if new_serial else {}))


def _renew(work: Hosting, items: list[Due], result: RenewalResult) -> None:
    sites = {}
    for item in items:
        try:
            (desired,) = work.recorded_sites([item.fqdn])
        except ProvisionerError as err:
            _failed(work, item, result, f"the site's record cannot be read: {err}", "record")
            continue
        row = work.site_row(item.fqdn)
        # A suspended site stays suspended: its vhost is rendered as the suspension left it.
        sites[item.fqdn] = dataclasses.replace(desired, suspended=row.state == "suspended")
    by_name = {i.fqdn: i for i in items if i.fqdn in sites}

    bundles: dict[str, certificates.Bundle] = {}
    ordering = []
    for fqdn, item in by_name.items():
        recorded = work.certs.reusable(fqdn) if item.reuse else None
        if recorded is not None:
            bundles[fqdn] = recorded
        else:
            ordering.append(sites[fqdn])
    if ordering:
        obtained, errors = work.certs.obtain(ordering, reason="renewal")
        bundles |= obtained
        for fqdn, err in errors.items():
            _failed(work, by_name[fqdn], result, f"the CA did not issue a certificate: {err}", "order")
    for fqdn, bundle in list(bundles.items()):
        # Checked before it replaces a certificate that works: one that would not verify stays out.
        problem = certificates.chain_problem(bundle, fqdn, work.ca_file())
        if problem:
            reason = f"the new certificate {problem}"
            work.certs.discard(fqdn, bundle.serial, by_name[fqdn].request_id, reason)
            _failed(work, by_name[fqdn], result, reason, "check", new_serial=bundle.serial)
            del bundles[fqdn]
    if not bundles:
        return

    installing = [sites[f] for f in bundles]
    try:
        # One run for all: one configtest and one graceful reload per web host. If the
        # configtest refuses, the role puts every file back and nothing reloads.
        web_target.apply(work.inventory_path, installing,
                         {"sftp_password_hashes": {}, "tls": {f: b.secrets() for f, b in bundles.items()}},
                         artifact_dir=work.config.artifacts_dir(), timeout=work.config.hosting.step_timeout)
    except Exception as err:  # noqa: BLE001 - any failure of the install keeps the old certificates
        error = as_error("web", err)
        for fqdn, bundle in bundles.items():
            reason = f"the new certificate could not be installed: {error}"
            work.certs.discard(fqdn, bundle.serial, by_name[fqdn].request_id, reason)
            _failed(work, by_name[fqdn], result, reason, "install", new_serial=bundle.serial)
        return

    for fqdn, bundle in bundles.items():
        item, row = by_name[fqdn], work.site_row(fqdn)
        served, problem = certificates.served_as_installed(row.public_ip, fqdn, work.ca_file(), bundle.serial,
                                                           timeout=SERVED_WAIT)
        if problem:
            reason = f"installed but not served as expected: {problem}"
            work.certs.discard(fqdn, bundle.serial, item.request_id, reason)
            _failed(work, item, result, reason, "check", new_serial=bundle.serial)
            continue
        work.certs.activate(fqdn, bundle.serial, item.request_id)
        certificate = {k: served[k] for k in ("issuer", "issuer_org", "serial", "names", "not_before", "not_after")}
        certificate["source"] = work.config.hosting.tls_source
        with work.store.session() as session:
            live = session.get(SiteRow, fqdn)
            live.config = {**live.config, "certificate": certificate}  # a new dict: the JSON column sees it
            live.updated_at = utcnow()
            add_event(session, item.request_id, "certificate_renewed", source=work.source, fqdn=fqdn,
                      old_serial=item.serial, serial=bundle.serial, not_after=served["not_after"],
                      reason=item.reason, reused=item.reuse)
        result.renewed.append({"fqdn": fqdn, "old_serial": item.serial, "serial": bundle.serial,
                               "not_after": served["not_after"], "issuer": served["issuer"]})
