"""DNS through the PowerDNS HTTP API (python-powerdns): the site's A record.

Records the toolkit creates carry a comment with account "provisioner";
a record at the same name without it is someone else's, and the plan stops
with a Conflict rather than touch it. One PATCH per zone, then NOTIFY so the
secondaries transfer the change at once.
"""

import time
from pathlib import Path
from urllib.parse import urlparse

import requests
from powerdns import PDNSApiClient, PDNSEndpoint
from powerdns.exceptions import PDNSError
from powerdns.interface import RRSet

from provisioner import ssh
from provisioner.changes import Create, Delete, Update
from provisioner.errors import ConfigError, Conflict, HostError
from provisioner.inventory import Inventory

ACCOUNT = "provisioner"


def _canonical(name: str) -> str:
    return name if name.endswith(".") else name + "."


def is_ours(rrset: dict) -> bool:
    return any(c.get("account") == ACCOUNT for c in rrset.get("comments", []))


class DnsTarget:
    def __init__(self, inventory: Inventory, ttl: int = 300):
        url, key_file = inventory.pdns_api()
        ssh.check_route(urlparse(url).hostname)
        try:
            key = Path(key_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read the PowerDNS API key {key_file}: {err}") from None
        self.host = inventory.primary_nameserver().name
        self.ttl = ttl
        self._server = PDNSEndpoint(PDNSApiClient(api_endpoint=url, api_key=key, timeout=10)).servers[0]

    def _zone(self, zone: str):
        try:
            found = self._server.get_zone(_canonical(zone))
        except (PDNSError, requests.RequestException) as err:
            raise HostError(f"PowerDNS API: cannot read zone {zone}: {err}") from None
        if found is None:
            raise ConfigError(f"zone {zone} does not exist on {self.host}")
        return found

    def read(self, zones) -> dict[str, dict[tuple[str, str], dict]]:
        """Every rrset of each zone, keyed by (name, type): one API call per zone."""
        live = {}
        for zone in sorted(set(zones)):
            z = self._zone(zone)
            z._details = None  # always read fresh
            live[zone] = {(r["name"], r["type"]): r for r in z.records}
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

    def _patch(self, zone: str, rrsets: list) -> None:
        z = self._zone(zone)
        try:
            z._patch(z.url, data={"rrsets": rrsets})
            z.notify()
        except (PDNSError, requests.RequestException) as err:
            raise HostError(f"PowerDNS API: change to {zone} refused: {err}") from None

    def apply(self, sites, request_ids: dict[str, str]) -> None:
        """Create or replace the A record of each site (one PATCH per zone)."""
        by_zone: dict[str, list] = {}
        for site in sites:
            rrset = RRSet(_canonical(site.fqdn), "A", [site.public_ip], ttl=self.ttl,
                          comments=[{"content": f"provisioner: request {request_ids[site.fqdn]}",
                                     "account": ACCOUNT, "modified_at": int(time.time())}])
            by_zone.setdefault(site.zone, []).append(rrset)
        for zone, rrsets in by_zone.items():
            self._patch(zone, rrsets)

    def remove(self, sites) -> None:
        """Delete the A record of each site, only where it is ours."""
        live = self.read({s.zone for s in sites})
        by_zone: dict[str, list] = {}
        for site in sites:
            current = live[site.zone].get((_canonical(site.fqdn), "A"))
            if current is not None and is_ours(current):
                by_zone.setdefault(site.zone, []).append(
                    {"name": _canonical(site.fqdn), "type": "A", "changetype": "DELETE", "records": []})
        for zone, rrsets in by_zone.items():
            self._patch(zone, rrsets)


def removal_changes(sites, live) -> list:
    return [Delete("dns", s.zone, s.fqdn, "A record", s.fqdn)
            for s in sites if (r := live[s.zone].get((_canonical(s.fqdn), "A"))) is not None and is_ours(r)]
