"""The lab's hosts are real, isolated and serve what their role says."""

import contextlib
import secrets
import socket
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests

from provisioner import runner
from provisioner.lab import guard, hosts, lifecycle, remote, topology

ROOT = Path(__file__).resolve().parents[2]
NAMES = [h.name for h in topology.HOSTS]
NAMESERVERS = [topology.primary_ns().name, topology.secondary_ns().name]
WEB = [h.name for h in topology.hosts_of("web")]
DB = [h.name for h in topology.hosts_of("db")]
BACKUP = topology.backup_host()
API = f"http://{topology.primary_ns().address}:{topology.PDNS_API_PORT}/api/v1/servers/localhost"


def _query(server: str, name: str, rdtype):
    address = guard.require_lab_route(topology.host(server).address)
    return dns.query.udp(dns.message.make_query(name, rdtype), str(address), timeout=2.0)


@pytest.mark.parametrize("name", NAMES)
def test_sshd_answers_and_the_deploy_account_logs_in(name, lab_host):
    host = lab_host(name)
    assert host.socket("tcp://0.0.0.0:22").is_listening
    client = remote.connect(topology.host(name))
    try:
        _, out, _ = client.exec_command("id -un; sudo -n id -u")
        assert out.read().decode().split() == [topology.LAB_USER, "0"]
    finally:
        client.close()


@pytest.mark.parametrize("name", NAMES)
def test_password_login_is_refused(name):
    import paramiko

    transport = paramiko.Transport((str(guard.require_lab_route(topology.host(name).address)), 22))
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password(topology.LAB_USER, "not-the-password")
    finally:
        transport.close()


@pytest.mark.parametrize("name", NAMES)
def test_own_hostname(name, lab_host):
    assert lab_host(name).check_output("hostname") == name
    assert socket.gethostname() != name


@pytest.mark.parametrize("name", NAMES)
def test_own_pid_namespace(name, lab_host):
    host = lab_host(name)
    assert host.check_output("cat /proc/1/comm") == "tini"
    # The controller's processes (this test among them) are invisible inside.
    assert "pytest" not in host.check_output("ps -eo args=")
    assert len(host.check_output("ps -eo pid=").split()) < 80
    # The host's init is a different process seen from the controller.
    assert hosts.init_pid(topology.host(name)) not in (None, 1)


@pytest.mark.parametrize("name", NAMES)
def test_own_filesystem_and_network(name, lab_host):
    host = lab_host(name)
    assert not host.file(str(ROOT / "pyproject.toml")).exists
    addresses = host.check_output("ip -o -4 addr show dev eth0")
    assert str(topology.host(name).address) in addresses
    # No way out of the lab: no default route.
    assert "default" not in host.check_output("ip route")


@pytest.mark.parametrize("server", NAMESERVERS)
@pytest.mark.parametrize("zone", topology.ZONES)
def test_nameservers_answer_soa_authoritatively(server, zone):
    answer = _query(server, zone, dns.rdatatype.SOA)
    assert answer.flags & dns.flags.AA
    soa = answer.find_rrset(answer.answer, dns.name.from_text(zone), dns.rdataclass.IN, dns.rdatatype.SOA)
    assert soa[0].mname.to_text() == f"ns1.{zone}."
    ns = _query(server, zone, dns.rdatatype.NS)
    names = {r.target.to_text() for rrset in ns.answer for r in rrset}
    assert names == {f"ns1.{zone}.", f"ns2.{zone}."}


def test_api_answers_with_the_key_and_refuses_without():
    guard.require_lab_route(topology.primary_ns().address)
    key = lifecycle.pdns_api_key()
    good = requests.get(f"{API}/zones", headers={"X-API-Key": key}, timeout=5)
    assert good.status_code == 200
    assert {z["name"] for z in good.json()} == {f"{z}." for z in topology.ZONES}
    assert requests.get(f"{API}/zones", timeout=5).status_code == 401
    wrong = requests.get(f"{API}/zones", headers={"X-API-Key": key + "x"}, timeout=5)
    assert wrong.status_code == 401


def test_api_key_file_is_root_only():
    mode = topology.PDNS_API_KEY_FILE.stat().st_mode & 0o777
    assert mode == 0o600
    assert topology.SSH_KEY.stat().st_mode & 0o077 == 0


@contextlib.contextmanager
def _txt_record_on_ns1(text: str):
    """A TXT record written through ns1's API with no NOTIFY (its name yielded); deleted after."""
    guard.require_lab_route(topology.primary_ns().address)
    headers = {"X-API-Key": lifecycle.pdns_api_key()}
    zone = topology.ZONES[0]
    rrset = {"name": f"labtest-{secrets.token_hex(4)}.{zone}.", "type": "TXT", "ttl": 60, "changetype": "REPLACE",
             "records": [{"content": f'"{text}"', "disabled": False}]}
    r = requests.patch(f"{API}/zones/{zone}.", json={"rrsets": [rrset]}, headers=headers, timeout=5)
    assert r.status_code == 204, r.text
    try:
        yield rrset["name"]
    finally:
        rrset.update(changetype="DELETE", records=[])
        requests.patch(f"{API}/zones/{zone}.", json={"rrsets": [rrset]}, headers=headers, timeout=5)
        requests.put(f"{API}/zones/{zone}./notify", headers=headers, timeout=5)


def _ns2_answers(name: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not _query("ns2", name, dns.rdatatype.TXT).answer:
        time.sleep(0.1)
    return bool(_query("ns2", name, dns.rdatatype.TXT).answer)


def test_secondary_follows_the_primary_by_notify():
    """A record added through the API on ns1 reaches ns2 by NOTIFY/AXFR."""
    zone = topology.ZONES[0]
    with _txt_record_on_ns1("lab notify test") as name:
        headers = {"X-API-Key": lifecycle.pdns_api_key()}
        assert requests.put(f"{API}/zones/{zone}./notify", headers=headers, timeout=5).status_code == 200
        assert _ns2_answers(name, within=20), "ns2 did not receive the change"


def test_the_secondary_transfers_at_once_when_the_toolkit_asks_it():
    """ns2 serves the API (host prepare, pdns_api_url): asked through it, it takes a change at once.

    The change is written with no NOTIFY at all: left to itself ns2 would see it at its next SOA
    check, 40 to 60 s later on the lab; asked for the transfer, within seconds.
    """
    from provisioner.inventory import load_inventory
    from provisioner.targets.dns import DnsTarget

    inventory = load_inventory(ROOT / "inventory" / "lab")
    secondary = topology.secondary_ns()
    assert [(h.name, url) for h, url in inventory.secondary_apis()] == [
        (secondary.name, f"http://{secondary.address}:{topology.PDNS_API_PORT}/api/v1")]
    guard.require_lab_route(secondary.address)
    ns2_api = f"http://{secondary.address}:{topology.PDNS_API_PORT}/api/v1/servers/localhost"
    assert requests.get(f"{ns2_api}/zones", headers={"X-API-Key": "not-the-key"}, timeout=5).status_code == 401
    with _txt_record_on_ns1("lab transfer test") as name:
        assert not _query("ns2", name, dns.rdatatype.TXT).answer
        assert DnsTarget(inventory)._transfer_now(topology.ZONES[0]) == []
        assert _ns2_answers(name, within=10), "ns2 did not transfer the zone when asked"


DEFAULT_VHOSTS = "/etc/apache2/conf-available/provisioner-default-vhosts.conf"


@pytest.mark.parametrize("name, address", [(h.name, str(a)) for h in topology.hosts_of("web")
                                           for a in (h.address, *(p.ip for p in h.public_addresses))])
def test_apache_answers_on_each_web_server(name, address, lab_host):
    """The bare address names no site: a default page answers, never a site or a redirect to one.

    Before the toolkit put a site on the address that is Debian's own default page; once a site
    binds it, the web_site role's default vhost (404, a neutral page) answers first.
    """
    guard.require_lab_route(address)
    response = requests.get(f"http://{address}/", timeout=5, allow_redirects=False)
    assert response.headers["Server"].startswith("Apache")
    assert "Location" not in response.headers
    # Each address is its own server's: the name Apache gives itself is that host's.
    assert lab_host(name).check_output("cat /etc/apache2/conf-available/provisioner-servername.conf").endswith(
        f"ServerName {name}")
    assert address in lab_host(name).check_output("ip -o -4 addr show dev eth0")
    defaults = lab_host(name).file(DEFAULT_VHOSTS)
    if defaults.exists and f"<VirtualHost {address}:80>" in defaults.content_string:
        assert response.status_code == 404
        assert "<!-- provisioner default vhost -->" in response.text
    else:
        assert response.status_code == 200
        assert "Apache2 Debian Default Page" in response.text


@pytest.mark.parametrize("name", WEB)
def test_php_fpm_and_apache_run_on_each_web_server(name, lab_host):
    host = lab_host(name)
    assert host.socket("unix:///run/php/php8.2-fpm.sock").is_listening
    assert host.run("apache2ctl configtest").rc == 0
    assert host.process.filter(comm="php-fpm8.2")
    # What the host's init starts at boot (the public_ip role may add its own service).
    assert {"ssh", "php8.2-fpm", "apache2"} <= set(host.file("/etc/lab/services").content_string.split())


@pytest.mark.parametrize("name", DB)
def test_mariadb_accepts_a_local_root_connection(name, lab_host):
    host = lab_host(name)
    user = host.check_output("mysql -N -B -e 'SELECT CURRENT_USER()'")
    assert user == "root@localhost"
    assert host.socket("tcp://0.0.0.0:3306").is_listening
    assert {"ssh", "mariadb"} <= set(host.file("/etc/lab/services").content_string.split())


def test_each_web_server_reaches_each_database_server(lab_host):
    """Placement may put a site's files on either web server and its database on either db server."""
    for web in WEB:
        for db in DB:
            address = topology.host(db).address
            assert lab_host(web).run(f"timeout 5 bash -c '</dev/tcp/{address}/3306'").rc == 0, (web, db)


# -- the backup host (restic's repositories over SFTP) ------------------------------------

def test_the_backup_host_runs_sshd_and_nothing_else(lab_host):
    host = lab_host(BACKUP.name)
    assert host.file("/etc/lab/services").content_string.split() == ["ssh"]
    # Only sshd listens on the network ("tcp://0.0.0.0:22", "tcp://:::22"; unix sockets aside).
    ports = {url.rsplit(":", 1)[1] for url in host.socket.get_listening_sockets() if not url.startswith("unix:")}
    assert ports == {"22"}
    for daemon in ("apache2", "mariadbd", "pdns_server", "pebble", "php-fpm8.2"):
        assert not host.process.filter(comm=daemon), daemon
    # restic runs on the controller, not here.
    assert host.run("command -v restic").rc != 0


def test_the_backup_account_is_locked_to_its_home_and_roots_key_list(lab_host):
    host = lab_host(BACKUP.name)
    account = host.user("restic")
    assert account.exists and account.home == "/srv/restic" and account.shell == "/usr/sbin/nologin"
    assert account.password in ("!", "*", "!*")
    home = host.file("/srv/restic")
    assert (home.user, home.group, home.mode) == ("restic", "restic", 0o700)
    keys = host.file("/etc/ssh/provisioner-backup.authorized_keys")
    assert (keys.user, keys.mode) == ("root", 0o644)
    assert keys.content_string.split()[:2] == topology.SSH_KEY.with_suffix(".pub").read_text().split()[:2]
    # What sshd itself applies to the account (its Match block), and not to the deploy account.
    effective = host.check_output("/usr/sbin/sshd -T -C user=restic,host=controller,addr=10.77.0.1").splitlines()
    assert {"forcecommand internal-sftp", "allowtcpforwarding no", "permittty no",
            "authorizedkeysfile /etc/ssh/provisioner-backup.authorized_keys"} <= set(effective)
    deploy = host.check_output(f"/usr/sbin/sshd -T -C user={topology.LAB_USER},host=controller,addr=10.77.0.1")
    assert "forcecommand internal-sftp" not in deploy.splitlines()


def _restic_client():
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(topology.KNOWN_HOSTS))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(str(guard.require_lab_route(BACKUP.address)), username="restic",
                   key_filename=str(topology.SSH_KEY), timeout=10, allow_agent=False, look_for_keys=False)
    return client


def test_the_backup_account_gets_sftp_and_nothing_else():
    import paramiko

    client = _restic_client()
    name = f"probe-{secrets.token_hex(4)}"
    try:
        sftp = client.open_sftp()
        try:
            assert sftp.normalize(".") == "/srv/restic"
            sftp.mkdir(name)
            with sftp.open(f"{name}/data", "w") as out:
                out.write(b"repository bytes")
            with sftp.open(f"{name}/data") as back:
                assert back.read() == b"repository bytes"
        finally:
            # Whatever the test got to make, it takes away.
            for remove, path in ((sftp.remove, f"{name}/data"), (sftp.rmdir, name)):
                try:
                    remove(path)
                except OSError:
                    pass
            sftp.close()
        # A command (or a shell) is refused: sshd answers with its SFTP-only notice.
        _, out, err = client.exec_command("id")
        assert out.channel.recv_exit_status() == 1
        assert out.read() == b"This service allows sftp connections only.\n"
        # No forwarding to another host of the lab.
        with pytest.raises(paramiko.ChannelException):
            client.get_transport().open_channel("direct-tcpip", (str(topology.host(DB[0]).address), 3306),
                                                ("127.0.0.1", 0))
    finally:
        client.close()


ACME = topology.acme_host()
LAB_CA = str(topology.CA_DIR / "ca.crt")


def _pebble_root():
    from cryptography import x509

    guard.require_lab_route(ACME.address)
    response = requests.get(f"{topology.ACME_MANAGEMENT_URL}/roots/0", verify=LAB_CA, timeout=10)
    response.raise_for_status()
    return x509.load_pem_x509_certificate(response.content)


def test_pebble_serves_its_directory_over_https_verified_by_the_lab_ca():
    from cryptography import x509

    guard.require_lab_route(ACME.address)
    directory = requests.get(topology.ACME_DIRECTORY_URL, verify=LAB_CA, timeout=10)
    assert directory.status_code == 200
    assert {"newAccount", "newNonce", "newOrder", "revokeCert"} <= set(directory.json())
    assert directory.json()["newOrder"].startswith(f"https://{ACME.address}:{topology.ACME_PORT}/")
    # Only the lab CA vouches for it: the system's trust store does not.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(topology.ACME_DIRECTORY_URL, timeout=10)
    # The roots file holds Pebble's current root (earlier ones may precede it).
    roots = x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes())
    assert _pebble_root() in roots


def test_pebble_runs_unprivileged_with_real_validation_and_a_private_key(lab_host):
    host = lab_host(ACME.name)
    assert host.socket(f"tcp://0.0.0.0:{topology.ACME_PORT}").is_listening
    assert host.socket(f"tcp://0.0.0.0:{topology.ACME_MANAGEMENT_PORT}").is_listening
    key = host.file("/etc/pebble/tls.key")
    assert (key.user, key.mode) == ("pebble", 0o600)
    [process] = host.process.filter(comm="pebble")
    assert process.user == "pebble"
    assert process.args.split() == ["/usr/bin/pebble", "-config", "/etc/pebble/pebble-config.json",
                                    "-dnsserver", f"{topology.primary_ns().address}:53"]
    env = host.check_output(f"tr '\\0' '\\n' < /proc/{process.pid}/environ").splitlines()
    assert {"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"} <= set(env)
    assert not [v for v in env if v.startswith("PEBBLE_VA_ALWAYS_VALID")]
    # No key material in any process's arguments on the host.
    assert "PRIVATE KEY" not in host.check_output("ps -eo args=")


def test_pebble_reaches_the_name_servers_and_the_web_servers_public_address(lab_host):
    """What DNS-01 and HTTP-01 validation need, seen from ca1 itself."""
    host = lab_host(ACME.name)
    soa = host.check_output(f"dig +short +time=2 +tries=1 @{topology.primary_ns().address} {topology.ZONES[0]} SOA")
    assert soa.startswith(f"ns1.{topology.ZONES[0]}. ")
    for name in WEB:
        web = str(topology.host(name).public_addresses[0].ip)
        code = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{web}/ || true")
        assert code in ("200", "404"), f"ca1 cannot reach {name} at http://{web}/ (curl said {code})"


def test_restarting_pebble_adds_its_new_root_and_keeps_the_earlier_ones():
    from cryptography import x509

    before = x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes())
    after = lifecycle.restart_acme()
    assert after[:len(before)] == before and len(after) == len(before) + 1
    assert after[-1] == _pebble_root() and after[-1] not in before
    assert x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes()) == after


def _route(address: str) -> str:
    return subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, check=True).stdout


def test_public_addresses_are_carried_by_the_lab_bridge_and_nothing_else():
    # The shared addresses, and both ends of each web server's pool.
    for address in ("203.0.113.10", "203.0.113.11", "203.0.113.128", "203.0.113.191", "203.0.113.192",
                    "203.0.113.254"):
        assert f"dev {topology.BRIDGE}" in _route(address)
    # The rest of the documentation range is not the lab's.
    for address in ("203.0.113.80", "203.0.113.16", "203.0.113.127"):
        assert f"dev {topology.BRIDGE}" not in _route(address)


def test_ansible_runner_reaches_every_host_with_the_lab_inventory():
    result = runner.run_playbook("ping.yml", ROOT / "inventory/lab", set(NAMES))
    assert set(result.stats["processed"]) == set(NAMES)


def test_a_second_lab_up_is_a_no_op():
    before = {h.name: hosts.pid(h) for h in topology.HOSTS}
    said = []
    status = lifecycle.up(log=said.append)
    assert status.up
    assert "already up" in " ".join(said)
    assert {h.name: hosts.pid(h) for h in topology.HOSTS} == before


def test_the_guard_reads_the_same_networks_as_ip_shows_on_the_bridge():
    from provisioner.lab import network

    carried = network.bridge_networks()
    assert carried == network._bridge_networks_from_ip()
    assert topology.LAB_NETWORK in carried and all(n in carried for n in topology.LAB_PUBLIC_NETWORKS)
