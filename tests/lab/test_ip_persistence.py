"""A dedicated address survives a restart of the web server.

A site with its own address (the Buleleng example) is provisioned on web1;
web1 is then restarted as a reboot would (lifecycle.restart_host: its services
stop, every address only the kernel held is dropped, its init starts again).
The address comes back from the host's own configuration (the public_ip role's
boot hook), and the site answers on it again. The site is removed at the end,
and its address leaves the host's configuration with it.
"""

import requests

from provisioner import audit, ssh
from provisioner.lab import hosts, lifecycle, remote, topology
from provisioner.verify import PLACEHOLDER_MARKER

WEB = "web1"
KEPT = "/etc/provisioner/public-addresses"


def _page(site):
    ssh.check_route(site.public_ip)
    return requests.get(f"http://{site.public_ip}/", headers={"Host": site.fqdn}, timeout=5, allow_redirects=False)


def _kept_lines(web) -> list[str]:
    return [line for line in web.file(KEPT).content_string.splitlines() if line and not line.startswith("#")]


def test_a_dedicated_address_comes_back_after_the_web_server_restarts(office, lab_host):
    request_id = office.through_review("buleleng-sipandu.yaml", tls="false")
    office.approve_without_hook(request_id)
    office.hosting.apply([request_id])
    (row,) = [office.site(fqdn) for fqdn in _fqdns(office)]
    (site,) = office.hosting.recorded_sites([row.fqdn])
    # On web1 on purpose (a fresh state home places its first site there): web1 is restarted below.
    assert site.dedicated_ip and row.state == "provisioned" and row.web_host == WEB

    web = lab_host(WEB)
    # Kept in web1's configuration, with a boot hook the lab's init starts before Apache.
    assert f"{site.public_ip}/32 eth0" in _kept_lines(web)
    assert web.file("/etc/lab/services").content_string.splitlines()[0] == "provisioner-public-addresses"
    assert web.file("/etc/init.d/provisioner-public-addresses").mode == 0o755
    before = _page(site)
    assert before.status_code == 200 and PLACEHOLDER_MARKER in before.text

    try:
        dropped = lifecycle.restart_host(WEB)
    finally:
        # Whatever happened, web1 runs again for the tests after this one.
        host = topology.host(WEB)
        if hosts.pid(host) is None:
            hosts.start(host)
            remote.wait_for_ssh(host, timeout=60)

    # The restart really took the address away; the host brought it back by itself.
    assert f"{site.public_ip}/32" in dropped
    web = lab_host(WEB)
    assert f" {site.public_ip}/32 " in web.check_output("ip -o -4 addr show dev eth0")
    assert web.run("service provisioner-public-addresses status").rc == 0
    after = _page(site)
    assert after.status_code == 200 and PLACEHOLDER_MARKER in after.text and site.fqdn in after.text
    # web1 is whole again, and the toolkit sees nothing to do and nothing wrong for the site.
    (web_status,) = [h for h in lifecycle.status().hosts if h.name == WEB]
    assert web_status.healthy, web_status
    assert office.hosting.plan([request_id])[0].empty
    report = audit.audit(office.config, office.store, site=site.fqdn)
    assert [f for f in report.findings if f.site == site.fqdn] == [], report.findings

    # Removing the site takes its address out of the host's configuration too.
    office.hosting.remove([site.fqdn])
    web = lab_host(WEB)
    assert f"{site.public_ip}/" not in "\n".join(_kept_lines(web))
    assert f" {site.public_ip}/" not in web.check_output("ip -o -4 addr show")


def _fqdns(office):
    from provisioner.store.models import SiteRow

    with office.store.session() as session:
        return [r.fqdn for r in session.query(SiteRow)]
