"""`provision import` against the real lab: a site made by hand on web1, db1 and ns1 the way an office
would have made it is listed, adopted without a change on the hosts, audits clean, is suspended (503)
and unsuspended, its normalization is planned, and it is removed like any other.

The hand-made site has a random label and its own state home; whatever the test leaves is taken
apart by hand afterwards (files, account, pool, database, A record), whatever happened.
"""

import json
import secrets
import time
from types import SimpleNamespace

import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests
import urllib3
from click.testing import CliRunner

from provisioner import ipam, ssh
from provisioner.cli import main
from provisioner.lab import guard

from labkit import PDNS, api_headers

ZONE = "tarakankota.go.id"


def _sh(office, host: str, script: str) -> str:
    """A shell script as root on a lab host, given on stdin (the database password never reaches argv)."""
    rc, out, err = ssh.run(office.hosting.inventory.host(host), "sh -s", stdin="set -eu\n" + script, sudo=True)
    assert rc == 0, f"{host}: {err or out}"
    return out


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _http(site) -> urllib3.BaseHTTPResponse:
    guard.require_lab_route(site.shared)
    pool = urllib3.HTTPConnectionPool(site.shared, 80, timeout=10, retries=False)
    return pool.request("GET", "/", headers={"Host": site.fqdn}, redirect=False)


def _a_records(ns: str, fqdn: str) -> list[str]:
    guard.require_lab_route(ns)
    answer = dns.query.udp(dns.message.make_query(fqdn, dns.rdatatype.A), ns, timeout=3)
    return sorted(r.address for rrset in answer.answer for r in rrset if rrset.rdtype == dns.rdatatype.A)


def _zone_patch(rrset: dict) -> None:
    reply = requests.patch(f"{PDNS}/zones/{ZONE}.", json={"rrsets": [rrset]}, headers=api_headers(), timeout=10)
    assert reply.status_code == 204, reply.text
    requests.put(f"{PDNS}/zones/{ZONE}./notify", headers=api_headers(), timeout=10)


def _wait_answers(office, fqdn: str, expected: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    servers = [h.address for h in office.hosting.inventory.group("nameservers")]
    while True:
        seen = {ns: _a_records(ns, fqdn) for ns in servers}
        if all(v == expected for v in seen.values()):
            return
        assert time.monotonic() < deadline, f"name servers answer {seen} for {fqdn}, expected {expected}"
        time.sleep(1)


def _host_state(office, site) -> str:
    """What adoption must not change: the files' sums, the links, owners and modes, the grants."""
    web = _sh(office, "web1", f"""
sha256sum /etc/apache2/sites-available/{site.label}.conf /etc/php/8.2/fpm/pool.d/{site.label}.conf
find /etc/apache2/sites-enabled -mindepth 1 -maxdepth 1 -printf '%f -> %l\n' | sort
stat -c '%U %G %a %n' {site.docroot} {site.docroot}/index.html
id {site.label}
""")
    db = _sh(office, "db1", f"mysql -N -e \"SHOW GRANTS FOR '{site.db_user}'@'{site.web_address}'\" | sed 's/IDENTIFIED.*//'\n")
    return web + db


def _take_apart(office, site) -> None:
    """Whatever is left of the hand-made site, removed by hand (each step tolerates its absence)."""
    suspended = f"provisioner-suspended-{site.fqdn}.conf"
    _sh(office, "web1", f"""
rm -f /etc/apache2/sites-enabled/{site.label}.conf /etc/apache2/sites-available/{site.label}.conf \
      /etc/apache2/sites-enabled/{suspended} /etc/apache2/sites-available/{suspended} \
      /etc/php/8.2/fpm/pool.d/{site.label}.conf
rm -rf {site.docroot}
if id {site.label} >/dev/null 2>&1; then userdel {site.label}; fi
if getent group {site.label} >/dev/null; then groupdel {site.label}; fi
service php8.2-fpm reload >/dev/null
apache2ctl graceful
""")
    _sh(office, "db1", f"mysql -e \"DROP USER IF EXISTS '{site.db_user}'@'{site.web_address}'; "
                       f"DROP DATABASE IF EXISTS \\`{site.db}\\`\"\n")
    _zone_patch({"name": f"{site.fqdn}.", "type": "A", "changetype": "DELETE", "records": []})


@pytest.fixture
def handmade(office):
    """A site made the way an office made them before the toolkit: no toolkit name, marker or layout."""
    label = f"lama{secrets.token_hex(3)}"
    web = office.hosting.inventory.host("web1")
    site = SimpleNamespace(label=label, fqdn=f"{label}.{ZONE}", shared=ipam.shared_address(web),
                           docroot=f"/var/www/{label}", db=f"db_{label}", db_user=f"{label}_u",
                           web_address=web.address, page=f"situs lama {label}")
    try:
        _sh(office, "web1", f"""
groupadd --system {label}
useradd --system --gid {label} --no-create-home --home-dir {site.docroot} --shell /usr/sbin/nologin {label}
install -d -o {label} -g {label} -m 0755 {site.docroot}
printf '<h1>%s</h1>\\n' '{site.page}' > {site.docroot}/index.html
chown {label}:{label} {site.docroot}/index.html
chmod 0644 {site.docroot}/index.html
cat > /etc/php/8.2/fpm/pool.d/{label}.conf <<'EOF'
; made by hand
[{label}]
user = {label}
group = {label}
listen = /run/php/{label}.sock
listen.owner = www-data
listen.group = www-data
pm = ondemand
pm.max_children = 2
EOF
cat > /etc/apache2/sites-available/{label}.conf <<'EOF'
# {site.fqdn}: made by hand
<VirtualHost {site.shared}:80>
    ServerName {site.fqdn}
    DocumentRoot {site.docroot}
    ErrorLog ${{APACHE_LOG_DIR}}/{label}-error.log
    <Directory {site.docroot}>
        Require all granted
    </Directory>
    <FilesMatch "\\.php$">
        SetHandler "proxy:unix:/run/php/{label}.sock|fcgi://localhost"
    </FilesMatch>
</VirtualHost>
EOF
a2ensite -q {label}
service php8.2-fpm reload >/dev/null
apache2ctl configtest
apache2ctl graceful
""")
        password = secrets.token_urlsafe(18)
        rc, out, err = ssh.run(office.hosting.inventory.host("db1"), "mysql --batch", sudo=True, stdin=(
            f"CREATE DATABASE `{site.db}`;\n"
            f"CREATE USER '{site.db_user}'@'{site.web_address}' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL PRIVILEGES ON `{site.db}`.* TO '{site.db_user}'@'{site.web_address}';\n"))
        assert rc == 0, err
        # An A record through the API, without the toolkit's comment (as any other client writes it).
        _zone_patch({"name": f"{site.fqdn}.", "type": "A", "ttl": 3600, "changetype": "REPLACE",
                     "records": [{"content": site.shared, "disabled": False}]})
        _wait_answers(office, site.fqdn, [site.shared])
        deadline = time.monotonic() + 15
        while _http(site).status != 200:
            assert time.monotonic() < deadline, "the hand-made site does not answer 200"
            time.sleep(0.5)
        yield site
    finally:
        _take_apart(office, site)


def test_a_hand_made_site_is_listed_adopted_audited_suspended_and_removed(office, handmade):
    site = handmade

    # Listed, grouped under its name, with what was found.
    code, out = _cli("import", "--zone", ZONE, "--json")
    assert code == 0, out
    found = next(s for s in json.loads(out)["sites"] if s["fqdn"] == site.fqdn)
    (vhost,) = found["vhosts"]
    assert vhost["host"] == "web1" and vhost["file"] == f"/etc/apache2/sites-available/{site.label}.conf"
    assert vhost["enabled"] and vhost["docroot"] == site.docroot and vhost["owner"] == site.label
    assert vhost["tls"] is None and vhost["listen"] == [[f"{site.shared}:80"]]
    (pool,) = found["pools"]
    assert (pool["name"], pool["user"], pool["listen"]) == (site.label, site.label, f"/run/php/{site.label}.sock")
    (database,) = found["databases"]
    assert database["name"] == site.db and database["host"] == "db1"
    assert [(a["user"], a["host"]) for a in database["accounts"]] == [(site.db_user, site.web_address)]
    assert found["dns"] == [{"zone": ZONE, "name": site.fqdn, "addresses": [site.shared], "ttl": 3600,
                             "marked": False}]
    code, out = _cli("import", "--host", "web1")
    assert code == 0 and site.fqdn in out and f"provision import --site {site.fqdn} --apply" in out, out

    # Shown, then recorded; nothing on the hosts changes.
    before = _host_state(office, site)
    code, out = _cli("import", "--site", site.fqdn)
    assert code == 0 and "would be recorded" in out, out
    assert office.site(site.fqdn) is None
    code, out = _cli("import", "--site", site.fqdn, "--apply")
    assert code == 0 and "recorded as adopted" in out, out
    assert _host_state(office, site) == before
    row = office.site(site.fqdn)
    assert row.state == "provisioned" and row.config["origin"] == "adopted"
    assert (row.config["names"]["user"], row.config["names"]["docroot"], row.config["names"]["db_name"]) == (
        site.label, site.docroot, site.db)
    (adopted,) = [e for e in office.events("site_adopted") if e.payload["fqdn"] == site.fqdn]
    assert adopted.actor and adopted.request_id == row.request_id
    # The toolkit's hosting never provisions it: its request holds no approval.
    code, out = _cli("hosting", row.request_id)
    assert code != 0 and "no approval" in out, out

    # Audited like any other site: clean as adopted.
    code, out = _cli("audit", "--site", site.fqdn, "--format", "json")
    assert code == 0 and json.loads(out)["clean"], out

    # Suspended: 503 from the toolkit's stand-in vhost; the office's vhost file is untouched.
    code, out = _cli("site", "suspend", site.fqdn, "--reason", "uji adopsi", "--apply")
    assert code == 0, out
    assert _http(site).status == 503
    assert office.site(site.fqdn).state == "suspended"
    code, out = _cli("audit", "--site", site.fqdn, "--format", "json")
    assert code == 0 and json.loads(out)["clean"], out

    # Meanwhile the office's vhost became one Apache refuses: the unsuspension fails and leaves the
    # host as it was (stand-in enabled, the refused vhost not), so Apache's configuration still passes.
    vhost = f"/etc/apache2/sites-available/{site.label}.conf"
    original = _sh(office, "web1", f"cat {vhost}\n")
    try:
        _sh(office, "web1", f"sed -i 's|^</VirtualHost>|    NoSuchDirectiveOfTheOffice on\\n</VirtualHost>|' {vhost}\n")
        code, out = _cli("site", "unsuspend", site.fqdn, "--apply")
        assert code != 0 and "put back as they were before this run" in out, out
        enabled = _sh(office, "web1", "apache2ctl configtest 2>/dev/null && echo configtest-passes\n"
                                      "ls /etc/apache2/sites-enabled/\n")
        assert "configtest-passes" in enabled and f"provisioner-suspended-{site.fqdn}.conf" in enabled, enabled
        assert f"\n{site.label}.conf\n" not in "\n" + enabled
        assert _http(site).status == 503 and office.site(site.fqdn).state == "suspended"
    finally:
        _sh(office, "web1", f"cat > {vhost} <<'VHOST'\n{original}VHOST\n")

    # Unsuspended: the office's own vhost serves the site again, exactly as before.
    code, out = _cli("site", "unsuspend", site.fqdn, "--apply")
    assert code == 0, out
    reply = _http(site)
    assert reply.status == 200 and site.page in reply.data.decode()
    assert _host_state(office, site) == before
    code, out = _cli("audit", "--site", site.fqdn, "--format", "json")
    assert code == 0 and json.loads(out)["clean"], out

    # The move to the toolkit's layout: a reviewed plan only.
    code, out = _cli("import", "--site", site.fqdn, "--normalize")
    assert code == 0 and "checksum" in out and "planned only" in out, out
    assert _host_state(office, site) == before

    # A vhost made after adoption that uses a directory in the document root and the site's PHP
    # socket (not even enabled): the removal planned now keeps the directory, the pool and the owner.
    extra = f"/etc/apache2/sites-available/{site.label}-baru.conf"
    try:
        _sh(office, "web1", f"""cat > {extra} <<'VHOST'
<VirtualHost {site.shared}:80>
    ServerName baru-{site.fqdn}
    DocumentRoot {site.docroot}/baru
    <FilesMatch "\\.php$">
        SetHandler "proxy:unix:/run/php/{site.label}.sock|fcgi://localhost"
    </FilesMatch>
</VirtualHost>
VHOST
""")
        code, out = _cli("site", "remove", site.fqdn, "--json")
        assert code == 0, out
        planned = json.loads(out)["plan"]
        kinds = {c["kind"] for c in planned["changes"]}
        assert {"vhost", "database"} <= kinds and not kinds & {"site directory", "PHP-FPM pool", "system user"}, out
        note = planned["notes"][site.fqdn]
        assert f"document root {site.docroot} ({extra} also use" in note, note
        assert f"pool.d/{site.label}.conf ({extra} also hand PHP to it)" in note and f"system user {site.label}" in note
    finally:
        _sh(office, "web1", f"rm -f {extra}\n")

    # Removed like any other: archived, then exactly what was found is taken away.
    code, out = _cli("site", "remove", site.fqdn, "--reason", "uji selesai", "--apply")
    assert code == 0, out
    assert office.site(site.fqdn).state == "removed"
    left = _sh(office, "web1", f"""
ls /etc/apache2/sites-enabled/{site.label}.conf /etc/apache2/sites-available/{site.label}.conf \
   /etc/php/8.2/fpm/pool.d/{site.label}.conf {site.docroot} 2>/dev/null || true
id {site.label} 2>/dev/null || true
""")
    assert left.strip() == ""
    dbs = _sh(office, "db1", f"mysql -N -e \"SHOW DATABASES LIKE '{site.db}'; "
                             f"SELECT User FROM mysql.user WHERE User = '{site.db_user}'\"\n")
    assert dbs.strip() == ""
    _wait_answers(office, site.fqdn, [])
    assert [e.payload.get("archive") for e in office.events("site_removed") if e.payload["fqdn"] == site.fqdn][0]
