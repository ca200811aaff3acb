"""Dedicated public addresses, brought up on the site's web server."""

from provisioner import runner
from provisioner.changes import Create, Delete
from provisioner.site import DesiredSite
from provisioner.targets.web import by_host


def plan(sites: list[DesiredSite], web_live: dict) -> list:
    return [Create("ip", s.web_host, s.fqdn, "public IP", s.public_ip, dedicated=True)
            for s in sites if s.dedicated_ip and s.public_ip not in web_live[s.web_host]["addresses"]]


def removal_changes(sites: list[DesiredSite], web_live: dict) -> list:
    return [Delete("ip", s.web_host, s.fqdn, "public IP", s.public_ip)
            for s in sites if s.dedicated_ip and s.public_ip in web_live[s.web_host]["addresses"]]


def apply(inventory_path, sites: list[DesiredSite], state: str = "present", artifact_dir=None, timeout=None):
    sites = [s for s in sites if s.dedicated_ip]
    if not sites:
        return None
    hosts = {s.web_host for s in sites}
    return runner.run_playbook(
        "public_ip.yml", inventory_path, hosts,
        # Each host gets only its own addresses (playbooks/public_ip.yml picks them by host).
        extravars={"public_ip__addresses_by_host": by_host(sites, lambda s: s.web_host, lambda s: s.ip_item(state))},
        limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
