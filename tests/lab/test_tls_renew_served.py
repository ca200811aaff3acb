"""Certificate status and renewal against the real lab: Pebble on ca1 issues, the site's web server serves.

A site costs the lab most of a minute to provision and remove, so the module provisions
one (fresh id and label, ACME certificate from Pebble, a state home of its own: `site`)
and its tests take turns on it in this file's order: status first, on the certificate
the site was provisioned with, then the renewals, each asserting against what was
served and recorded when it started. The site is removed when the module ends. The test
that stops Pebble starts it again in a finally (and records its new root).
"""

import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import urllib3

from provisioner import certificates, tls_renewal
from provisioner.lab import guard, lifecycle


POLL_EVERY = 0.02  # seconds between two HTTPS requests of the client that watches a renewal


@pytest.fixture(scope="module")
def site(module_office):
    """One provisioned site shared by the module's tests: SimpleNamespace(office, record)."""
    office = module_office
    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    (record,) = office.hosting.apply([request_id]).sites
    return SimpleNamespace(office=office, record=record)


def _served(office, record: dict) -> dict:
    return certificates.served(record["public_ip"], record["fqdn"], office.hosting.ca_file())


def _events(office, kind: str, fqdn: str) -> list:
    return [e for e in office.events(kind) if e.payload["fqdn"] == fqdn]


class Poller(threading.Thread):
    """A client that GETs https://<fqdn>/ every POLL_EVERY seconds, each time on a new TLS
    connection verified against the trusted roots, and keeps every status (or error)."""

    def __init__(self, record: dict, ca_file: str):
        super().__init__(daemon=True)
        guard.require_lab_route(record["public_ip"])
        self.pool = urllib3.HTTPSConnectionPool(
            record["public_ip"], 443, timeout=5, retries=False, maxsize=1, server_hostname=record["fqdn"],
            assert_hostname=record["fqdn"], cert_reqs="CERT_REQUIRED", ca_certs=ca_file)
        self.fqdn = record["fqdn"]
        self.seen: list = []
        self.serials: set[str] = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                # Connection: close: every poll is a new handshake, so it meets the reload.
                response = self.pool.request("GET", "/", headers={"Host": self.fqdn, "Connection": "close"},
                                             redirect=False, preload_content=True)
                self.seen.append(response.status)
            except Exception as err:  # noqa: BLE001 - any failed request is what the test looks for
                self.seen.append(f"{type(err).__name__}: {err}")
            time.sleep(POLL_EVERY)


def test_status_shows_the_issuer_and_expiry_figures(site):
    office, record = site.office, site.record
    fqdn = record["fqdn"]
    (row,) = tls_renewal.status(office.config, office.store, site=fqdn)
    served = row["served"]
    assert row["error"] is None and row["web_host"] == record["web_host"]
    assert served["issuer"] and "Pebble" in served["issuer"]
    assert fqdn in served["names"] and served["covers"] and served["trusted"]
    # The days left are those to the served not-after, and agree with the record.
    not_after = datetime.fromisoformat(served["not_after"])
    assert served["days_left"] > 0
    assert abs(served["days_left"] - (not_after - datetime.now(timezone.utc)).total_seconds() / 86400) < 0.2
    assert row["recorded"]["serial"] == served["serial"] and row["matches"] is True
    assert abs(row["recorded"]["days_left"] - served["days_left"]) < 0.2
    assert row["record_certificate"]["not_after"] == served["not_after"]
    assert row["last_failure"] is None


def test_a_forced_renewal_serves_a_new_certificate_with_no_failed_request(site):
    office, record = site.office, site.record
    fqdn = record["fqdn"]
    before = _served(office, record)
    renewed_before = len(_events(office, "certificate_renewed", fqdn))
    assert before["trusted"] and before["covers"]
    assert office.hosting.certs.current(fqdn).serial == before["serial"]

    poller = Poller(record, office.hosting.ca_file())
    poller.start()
    try:
        time.sleep(0.5)  # polls before the renewal starts
        result = tls_renewal.renew(office.config, office.store, site=fqdn, within=100000, apply=True)
        time.sleep(0.5)  # and after the reload
    finally:
        poller.stop.set()
        poller.join(10)

    assert result.failed == {} and [d.fqdn for d in result.plan.due] == [fqdn]
    (renewed,) = result.renewed
    after = _served(office, record)
    assert after["serial"] == renewed["serial"] != before["serial"]
    assert renewed["old_serial"] == before["serial"]
    # The new certificate chains to Pebble's root (the roots file) and covers the name.
    assert after["trusted"] and after["covers"] and after["trust_error"] is None
    assert after["issuer"] == before["issuer"]
    # Every request during the renewal (orders, install, configtest, graceful reload) got a 200.
    failed = [s for s in poller.seen if s != 200]
    assert failed == [], failed[:5]
    assert len(poller.seen) >= 50, len(poller.seen)

    # The record follows: the new certificate active, the old one superseded, the site's record updated.
    current = office.hosting.certs.current(fqdn)
    assert current.serial == after["serial"] and current.state == "active"
    states = {r.serial: r.state for r in office.hosting.certs.rows(fqdn)}
    assert states[before["serial"]] == "superseded"
    assert office.site(fqdn).config["certificate"]["serial"] == after["serial"]
    (event,) = _events(office, "certificate_renewed", fqdn)[renewed_before:]
    assert (event.payload["old_serial"], event.payload["serial"]) == (before["serial"], after["serial"])

    # Nothing is due any more under the default window.
    again = tls_renewal.renew(office.config, office.store, site=fqdn)
    assert again.plan.due == [] and not again.applied


def test_pebble_stopped_during_a_renewal_keeps_the_old_certificate_and_says_why(site, monkeypatch):
    office, record = site.office, site.record
    fqdn = record["fqdn"]
    before = _served(office, record)
    failed_before = len(_events(office, "tls_renewal_failed", fqdn))
    made = certificates.Certificates.client

    def then_stop(self):
        # The CA answered the directory and the account; it goes away before the order.
        client = made(self)
        lifecycle.stop_acme()
        return client

    monkeypatch.setattr(certificates.Certificates, "client", then_stop)
    try:
        result = tls_renewal.renew(office.config, office.store, site=fqdn, within=100000, apply=True)
    finally:
        monkeypatch.setattr(certificates.Certificates, "client", made)
        lifecycle.start_acme()  # a new root, added to the roots file

    assert result.renewed == [] and list(result.failed) == [fqdn]
    reason = result.failed[fqdn]
    assert "ACME CA" in reason and "10.77.0.41" in reason, reason
    # The old certificate still serves, still trusted.
    still = _served(office, record)
    assert still["serial"] == before["serial"] and still["trusted"]
    (event,) = _events(office, "tls_renewal_failed", fqdn)[failed_before:]
    assert event.payload["reason"] == reason and event.payload["serial"] == before["serial"]
    assert event.payload["stage"] == "order"
    assert office.hosting.certs.current(fqdn).serial == before["serial"]
    (row,) = tls_renewal.status(office.config, office.store, site=fqdn)
    assert row["last_failure"]["reason"] == reason and row["matches"] is True

    # Pebble is back: the next run renews it, and status no longer shows the failure.
    retried = tls_renewal.renew(office.config, office.store, site=fqdn, within=100000, apply=True)
    assert retried.failed == {}, retried.failed
    (renewed,) = retried.renewed
    after = _served(office, record)
    assert after["serial"] == renewed["serial"] != before["serial"] and after["trusted"]
    (row,) = tls_renewal.status(office.config, office.store, site=fqdn)
    assert row["last_failure"] is None and row["served"]["serial"] == after["serial"]
