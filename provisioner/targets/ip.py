"""Dedicated public addresses, brought up on the site's web server."""

from provisioner import runner
from provisioner.changes import Create, Delete
from provisioner.site import DesiredSite


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
        extravars={"public_ip__addresses": [s.ip_item(state) for s in sites]},
        limit=",".join(sorted(hosts)), artifact_dir=artifact_dir, timeout=timeout,
    )
