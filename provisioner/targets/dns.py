"""DNS through the PowerDNS HTTP API (python-powerdns): the site's A record.

Records the toolkit creates carry a comment with account "provisioner";
a record at the same name without it is someone else's, and the plan stops
with a Conflict rather than touch it. One PATCH per zone, then NOTIFY so the
secondaries transfer the change. A NOTIFY reaches a secondary only after a
second or two (PowerDNS sends and takes them in once-a-second rounds), so a
secondary that serves the API too (pdns_api_url in the inventory) is also asked
to transfer the zone at once; one that cannot be asked still has the NOTIFY.

Every API call goes through `_call`: a refused connection, a reset, a timeout
or a 5xx is retried a few times with a doubling pause (the whole wait stays
under a few seconds); a 4xx is not retried. Whatever fails becomes a HostError
(a ConfigError for a refused API key) naming the server, the zone and the
cause. Nothing talks to the server until the first call, so making a
DnsTarget never fails on the network.
"""

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests
from powerdns import PDNSApiClient
from powerdns.exceptions import PDNSError
from powerdns.interface import RRSet

from provisioner import ssh
from provisioner.changes import Create, Delete, Update
from provisioner.errors import ConfigError, Conflict, HostError, ProvisionerError
from provisioner.inventory import Inventory

# python-powerdns logs every 4xx/5xx at ERROR (printed bare on stderr when the
# process configured no logging, next to the toolkit's one-line error) and its
# request headers, the X-API-Key among them, at DEBUG: none of it leaves here.
_PDNS_LOG = logging.getLogger("powerdns")
_PDNS_LOG.addHandler(logging.NullHandler())
_PDNS_LOG.propagate = False

ACCOUNT = "provisioner"
# The Authoritative Server's API has exactly one server, always named localhost.
SERVER = "/servers/localhost"
ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the 2nd attempt; doubled for each next one
TIMEOUT = 10.0  # seconds per request
# Asking a secondary for a transfer only saves time: one short try, never a long wait.
TRANSFER_TIMEOUT = 2.0


def _canonical(name: str) -> str:
    return name if name.endswith(".") else name + "."


def is_ours(rrset: dict) -> bool:
    return any(c.get("account") == ACCOUNT for c in rrset.get("comments", []))


# ACME DNS-01 answers live at _acme-challenge.<name> for a minute or so, while an order is validated.
CHALLENGE_LABEL = "_acme-challenge"
CHALLENGE_TTL = 60


def is_challenge(name: str, rtype: str, rrset: dict) -> bool:
    """A DNS-01 challenge record the toolkit put there: transient, never drift."""
    return rtype == "TXT" and name.startswith(CHALLENGE_LABEL + ".") and is_ours(rrset)


def zone_of(name: str, zones) -> str:
    """The zone (the longest of `zones`) that `name` is in."""
    name = name.rstrip(".").lower()
    found = [z for z in zones if name == z.rstrip(".").lower() or name.endswith("." + z.rstrip(".").lower())]
    if not found:
        raise ConfigError(f"{name} is in none of the managed zones {sorted(zones)}")
    return max(found, key=len)


def _cause(err: requests.RequestException) -> str:
    """A short cause for a requests failure (its text is a long nested repr)."""
    if isinstance(err, requests.Timeout):
        return "no answer in time (timeout)"
    text = str(err)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    if "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection closed by the server"
    return type(err).__name__


def _pause(seconds: float) -> None:
    time.sleep(seconds)


@dataclass(frozen=True)
class _Api:
    """One server's API as the target uses it: how long a request may take, how often it is tried."""

    host: str
    url: str
    timeout: float
    attempts: int


def _refused(message: str) -> ConfigError:
    """A request the server refused before acting on it (wrong key, no such zone): nothing changed."""
    err = ConfigError(message)
    err.unchanged = True
    return err


def _error(message: str, unchanged: bool) -> HostError:
    err = HostError(message)
    err.unchanged = unchanged
    return err


class DnsTarget:
    def __init__(self, inventory: Inventory, ttl: int = 300, attempts: int = ATTEMPTS, backoff: float = BACKOFF,
                 timeout: float = TIMEOUT):
        self.url, self.key_file = inventory.pdns_api()
        self.host = inventory.primary_nameserver().name
        self.ttl = ttl
        self.backoff = backoff
        # The primary, where every record is written, and the secondaries that serve the API,
        # only asked to hurry a transfer: one short try each.
        self.primary = _Api(self.host, self.url, timeout, max(1, attempts))
        self.secondaries = [_Api(h.name, url, TRANSFER_TIMEOUT, 1) for h, url in inventory.secondary_apis()]
        self._key = None
        self._clients: dict[str, PDNSApiClient] = {}

    def _api_key(self) -> str:
        if self._key is None:
            try:
                self._key = Path(self.key_file).read_text().strip()
            except OSError as err:
                raise ConfigError(f"cannot read the PowerDNS API key {self.key_file}: {err}") from None
        return self._key

    def _client_of(self, api: _Api) -> PDNSApiClient:
        if api.host not in self._clients:
            ssh.check_route(urlparse(api.url).hostname)
            self._clients[api.host] = PDNSApiClient(api_endpoint=api.url, api_key=self._api_key(),
                                                    timeout=api.timeout)
        return self._clients[api.host]

    def _call(self, method: str, path: str, what: str, data=None, missing: str | None = None,
              api: _Api | None = None):
        """One API request, transient failures retried with a bounded backoff.

        `api`: the server asked (default: the primary).
        `missing`: the message of the ConfigError for a 404 (the zone does not exist).
        The error raised carries `unchanged`: True when no attempt can have
        changed anything (every one was refused before the server acted on it);
        a HostError after the retries carries `connection`: True when the server
        did not answer at all.
        """
        api = api or self.primary
        where = f"PowerDNS API on {api.host}"
        client, attempts = self._client_of(api), api.attempts
        reached = False  # a timeout, a reset or a 5xx may come after the server acted
        connection = False  # the last attempt got no HTTP answer at all
        for attempt in range(1, attempts + 1):
            try:
                return client.request(path, method=method, data=data)
            except PDNSError as err:
                status = err.status_code
                if status in (401, 403):
                    raise _refused(f"{where}: {what}: the API key was refused (HTTP {status}); "
                                   f"check {self.key_file}") from None
                cause = f"HTTP {status}: {str(err.message)[:200]}"
                if missing and (status == 404 or (status == 422 and "Could not find" in str(err.message))):
                    raise _refused(missing) from None
                if status < 500:
                    raise _error(f"{where}: {what}: refused ({cause})", unchanged=not reached) from None
                reached, connection = True, False
            except (requests.ConnectionError, requests.Timeout) as err:
                cause, connection = _cause(err), True
                reached = reached or not isinstance(err, requests.ConnectTimeout) and cause != "connection refused"
            except (requests.RequestException, ValueError) as err:
                # A malformed URL or an answer that is not JSON: retrying will not help.
                raise HostError(f"{where}: {what}: {type(err).__name__}: {str(err)[:200]}") from None
            if attempt < attempts:
                _pause(self.backoff * 2 ** (attempt - 1))
        tried = f"tried {attempts} times" if attempts > 1 else "tried once"
        err = _error(f"{where}: {what}: {cause} ({tried})", unchanged=not reached)
        err.connection = connection  # no answer from the server: the same for every site
        raise err

    def _zone_path(self, zone: str) -> str:
        return f"{SERVER}/zones/{_canonical(zone)}"

    def _zone(self, zone: str) -> dict:
        return self._call("GET", self._zone_path(zone), f"cannot read zone {zone}",
                          missing=f"zone {zone} does not exist on {self.host}")

    def read(self, zones) -> dict[str, dict[tuple[str, str], dict]]:
        """Every rrset of each zone, keyed by (name, type): one API call per zone."""
        live = {}
        for zone in sorted(set(zones)):
            live[zone] = {(r["name"], r["type"]): r for r in self._zone(zone).get("rrsets", [])}
        return live

    def plan(self, sites, live) -> list:
        changes = []
        for site in sites:
            name = _canonical(site.fqdn)
            rrsets = live[site.zone]
            current = rrsets.get((name, "A"))
            if any(t == "CNAME" for (n, t) in rrsets if n == name):
                raise Conflict(f"{site.fqdn}: a CNAME exists there that the toolkit did not create; nothing touched")
            if current is not None and not is_ours(current):
                raise Conflict(f"{site.fqdn}: an A record exists that the toolkit did not create "
                               f"({', '.join(r['content'] for r in current['records'])}); nothing touched")
            if current is None:
                changes.append(Create("dns", site.zone, site.fqdn, "A record", site.fqdn,
                                      address=site.public_ip, ttl=self.ttl))
            elif [r["content"] for r in current["records"]] != [site.public_ip] or current["ttl"] != self.ttl:
                changes.append(Update("dns", site.zone, site.fqdn, "A record", site.fqdn, address=site.public_ip,
                                      ttl=self.ttl, was=[r["content"] for r in current["records"]]))
        return changes

    def _patch(self, zone: str, rrsets: list) -> str | None:
        """PATCH the zone, then NOTIFY and ask the secondaries with an API for a transfer;
        returns a warning when only those failed."""
        self._call("PATCH", self._zone_path(zone), f"change to zone {zone}", data={"rrsets": rrsets})
        # The record is written: a NOTIFY that fails only delays the secondaries until their
        # next SOA check, so it is a warning for the caller to record, never a failed step.
        warnings = []
        try:
            self._call("PUT", self._zone_path(zone) + "/notify", f"NOTIFY of zone {zone}")
        except HostError as err:
            warnings.append(str(err))
        warnings += self._transfer_now(zone)
        return "; ".join(warnings) or None

    def _transfer_now(self, zone: str) -> list[str]:
        """Ask each secondary with an API to transfer `zone` now (PowerDNS's axfr-retrieve, which
        queues the transfer and answers at once); what failed, as warnings: the NOTIFY still works."""
        warnings = []
        for secondary in self.secondaries:
            try:
                self._call("PUT", self._zone_path(zone) + "/axfr-retrieve", f"transfer of zone {zone}",
                           api=secondary)
            except ProvisionerError as err:  # a refused key, too: the record is written all the same
                warnings.append(str(err))
        return warnings

    def apply(self, sites, request_ids: dict[str, str]) -> dict[str, str]:
        """Create or replace the A record of each site (one PATCH per zone); returns warnings by zone."""
        by_zone: dict[str, list] = {}
        for site in sites:
            rrset = RRSet(_canonical(site.fqdn), "A", [site.public_ip], ttl=self.ttl,
                          comments=[{"content": f"provisioner: request {request_ids[site.fqdn]}",
                                     "account": ACCOUNT, "modified_at": int(time.time())}])
            by_zone.setdefault(site.zone, []).append(rrset)
        return {zone: w for zone, rrsets in by_zone.items() if (w := self._patch(zone, rrsets))}

    def remove(self, sites) -> dict[str, str]:
        """Delete the A record of each site, only where it is ours; returns warnings by zone."""
        live = self.read({s.zone for s in sites})
        by_zone: dict[str, list] = {}
        for site in sites:
            current = live[site.zone].get((_canonical(site.fqdn), "A"))
            if current is not None and _removable(site, current):
                by_zone.setdefault(site.zone, []).append(
                    {"name": _canonical(site.fqdn), "type": "A", "changetype": "DELETE", "records": []})
        return {zone: w for zone, rrsets in by_zone.items() if (w := self._patch(zone, rrsets))}


    def challenges(self, records: dict[str, list[str]], zones, present: bool = True) -> dict[str, str]:
        """Put (present) or take away the DNS-01 TXT records `records` (name -> values), one PATCH
        per zone, each marked as the toolkit's. Returns warnings by zone (a failed NOTIFY).

        A TXT record at one of those names that the toolkit did not create is never replaced,
        nor deleted (the ACME client cleans up even after a publish this refused).
        """
        by_zone: dict[str, list] = {}
        for name in records:
            by_zone.setdefault(zone_of(name, zones), []).append(name)
        live = self.read(by_zone)
        patches: dict[str, list] = {}
        for zone, names in sorted(by_zone.items()):
            for name in names:
                fqdn = _canonical(name)
                current = live[zone].get((fqdn, "TXT"))
                if not present:
                    if current is not None and is_ours(current):
                        patches.setdefault(zone, []).append(
                            {"name": fqdn, "type": "TXT", "changetype": "DELETE", "records": []})
                    continue
                if current is not None and not is_ours(current):
                    raise Conflict(f"{name}: a TXT record exists that the toolkit did not create; "
                                   "the ACME challenge cannot be published there")
                values = ['"%s"' % v for v in records[name]]
                patches.setdefault(zone, []).append(RRSet(
                    fqdn, "TXT", values, ttl=CHALLENGE_TTL,
                    comments=[{"content": "provisioner: ACME DNS-01 challenge", "account": ACCOUNT,
                               "modified_at": int(time.time())}]))
        return {zone: w for zone, rrsets in patches.items() if (w := self._patch(zone, rrsets))}


def _removable(site, rrset: dict) -> bool:
    """The toolkit deletes its own A records, and an adopted site's as it was found (adopting it
    took over those addresses, not whatever the name points at since)."""
    if is_ours(rrset):
        return True
    found = (getattr(site, "adopted", None) or {}).get("dns")
    if not found:
        return False
    return sorted(r["content"] for r in rrset["records"]) == sorted(found.get("addresses") or [])


def removal_changes(sites, live) -> list:
    changes = []
    for s in sites:
        rrset = live[s.zone].get((_canonical(s.fqdn), "A"))
        if rrset is None:
            continue
        if _removable(s, rrset):
            changes.append(Delete("dns", s.zone, s.fqdn, "A record", s.fqdn))
        elif getattr(s, "adopted", None) is not None:
            # Refused while planning, before any step: the read-back would find the record left.
            found = (s.adopted.get("dns") or {}).get("addresses")
            raise Conflict(f"{s.fqdn}: its A record now points at "
                           f"{', '.join(r['content'] for r in rrset['records']) or 'nothing'}, not at what was "
                           f"adopted ({', '.join(found) if found else 'no A record'}); check who changed it, "
                           "then take the site apart by hand")
    return changes
