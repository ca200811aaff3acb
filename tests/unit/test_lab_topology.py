"""The lab's topology, its Ansible inventory and the Vagrantfile agree."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.lab import rootfs, topology

ROOT = Path(__file__).resolve().parents[2]


def _inventory_hosts():
    data = yaml.safe_load((ROOT / "inventory/lab/hosts.yml").read_text())
    for group, body in data["all"]["children"].items():
        for name, hostvars in body["hosts"].items():
            yield name, group, hostvars


def test_inventory_matches_topology():
    found = {name: (group, hv["ansible_host"], hv["lab_role"]) for name, group, hv in _inventory_hosts()}
    expected = {h.name: (h.group, str(h.address), h.role) for h in topology.HOSTS}
    assert found == expected


def test_inventory_zones_and_public_address_match_topology():
    zones = yaml.safe_load((ROOT / "inventory/lab/group_vars/nameservers.yml").read_text())["dns_zones"]
    assert tuple(zones) == topology.ZONES
    web = {name: hv for name, group, hv in _inventory_hosts() if group == "web"}
    for name, hv in web.items():
        public = topology.host(name).public_addresses[0]
        assert hv["public_ip"] == str(public.ip)
        assert hv["public_prefix"] == public.network.prefixlen


def test_each_web_server_has_its_own_pool_inside_the_routed_block():
    web = [h for h in topology.HOSTS if h.role == "web"]
    assert [h.name for h in web] == ["web1", "web2"] == [h.name for h in topology.hosts_of("web")]
    inventory = {name: hv for name, group, hv in _inventory_hosts() if group == "web"}
    taken = set()
    for h in web:
        first, last = h.dedicated_pool
        pool = {first + i for i in range(int(last) - int(first) + 1)}
        # Inside the block the bridge carries, apart from every other server's pool and shared address.
        assert all(a in topology.DEDICATED_POOL for a in pool)
        assert not pool & taken
        assert not {p.ip for other in web for p in other.public_addresses} & pool
        taken |= pool
        # The inventory says the same, and routes the same block to the server.
        assert inventory[h.name]["public_ip_pool"] == f"{first}-{last}"
        assert inventory[h.name]["public_routed_networks"] == [str(topology.DEDICATED_POOL)]
    # The shared addresses are on the bridge's /28, one per server.
    shared = [h.public_addresses[0] for h in web]
    assert all(a.network == topology.CONTROLLER_PUBLIC_ADDRESS.network for a in shared)
    assert len(set(shared)) == len(shared)


def test_the_backup_host_is_in_the_inventory_with_its_account_and_the_lab_key():
    backup = topology.backup_host()
    assert (backup.name, str(backup.address), backup.group) == ("backup1", "10.77.0.51", "backup")
    assert not backup.public_addresses and not backup.reaches_public
    data = yaml.safe_load((ROOT / "inventory/lab/hosts.yml").read_text())
    assert data["all"]["children"]["backup"]["vars"] == {"backup_user": "restic", "backup_path": "/srv/restic"}
    # The key the account accepts is the controller's lab key, read when host prepare runs.
    keys = yaml.safe_load((ROOT / "inventory/lab/group_vars/backup.yml").read_text())["backup_authorized_keys"]
    assert keys == [f"{{{{ lookup('ansible.builtin.file', '{topology.SSH_KEY}.pub') }}}}"]


def test_the_backup_host_runs_sshd_alone_and_the_account_gets_sftp_only():
    from provisioner import host_prepare

    assert "backup" in host_prepare.GROUPS
    playbook = yaml.safe_load((ROOT / "playbooks/host_prepare.yml").read_text())
    assert {"name": "Backup repository hosts (SFTP-only account)", "hosts": "backup", "gather_facts": False,
            "roles": [{"role": "host_backup"}]} in playbook
    role = ROOT / "playbooks/roles/host_backup"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    # Nothing but sshd; restic runs on the controller.
    assert set(defaults["host_backup__packages"]) == {"openssh-server", "python3-apt"}
    dropin = (role / "templates/30-provisioner-backup.conf.j2").read_text()
    settings = [line.split() for line in dropin.splitlines() if line.strip() and not line.startswith("#")]
    assert settings[0] == ["Match", "User", "{{", "host_backup__user", "}}"]
    assert dict((s[0], " ".join(s[1:])) for s in settings[1:]) == {
        "ForceCommand": "internal-sftp", "AuthorizedKeysFile": "{{ host_backup__keys_file }}",
        "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no", "AllowTcpForwarding": "no",
        "AllowAgentForwarding": "no", "AllowStreamLocalForwarding": "no", "PermitTunnel": "no",
        "PermitTTY": "no", "PermitUserRC": "no", "X11Forwarding": "no"}
    # The keys file is root's, outside the home the account can write over SFTP.
    assert not defaults["host_backup__keys_file"].startswith("{{ host_backup__path }}")
    # sshd tests the drop-in before it reloads (as host_web does).
    tasks = (role / "tasks/configure.yml").read_text()
    assert tasks.index("/usr/sbin/sshd -t") < tasks.index("service ssh reload")
    # The lab's own script has nothing to add on the backup host.
    setup = (ROOT / "provisioner/lab/scripts/setup-host.sh").read_text()
    assert "ns-primary|ns-secondary|db|backup) : ;;" in setup


def test_every_lab_address_is_in_the_lab_network():
    for h in topology.HOSTS:
        assert h.address in topology.LAB_NETWORK
        for public in h.public_addresses:
            assert public.ip in topology.PUBLIC_NETWORK
    addresses = [h.address for h in topology.HOSTS]
    assert len(set(addresses)) == len(addresses)
    assert topology.CONTROLLER_ADDRESS.ip not in addresses


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by `make install`")
def test_vagrantfile_validates_and_defines_the_same_hosts(tmp_path):
    # A machine without VirtualBox or libvirt has no usable provider; validating
    # the Vagrantfile itself must not need one (`vagrant status` would).
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}
    validate = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True,
                              text=True, env=env)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Vagrantfile validated successfully" in validate.stdout
    # Each machine says it is validated: "==> web1: Ignoring provider config for validation..."
    machines = set(re.findall(r"^==> ([a-z0-9]+): Ignoring provider config", validate.stdout, re.M))
    assert machines == {h.name for h in topology.HOSTS}
    assert "ca1" in machines


def test_vagrantfile_configures_the_servers_with_host_prepare():
    from provisioner import host_prepare

    vagrantfile = (ROOT / "Vagrantfile").read_text()
    # The script's phases are only the lab's own; the services come from host prepare's playbook,
    # run by a trigger on the machines of the groups host prepare knows.
    assert "%w[packages base lab].each do |phase|" in vagrantfile
    groups = re.search(r"^PREPARED_GROUPS = %w\[([^\]]*)\]", vagrantfile, re.M).group(1).split()
    assert set(groups) == set(host_prepare.GROUPS)
    assert 'HOST_PREPARE = File.join(ROOT, "playbooks/host_prepare.yml")' in vagrantfile
    assert (ROOT / "playbooks" / host_prepare.PLAYBOOK).is_file()
    assert "node.trigger.after [:up, :provision]" in vagrantfile
    # The API key reaches the playbook as the toolkit's runner passes it: in a private file, never argv.
    assert '"provisioner_secrets" => { "pdns_api_key" => api_key }' in vagrantfile
    assert "PDNS_API_KEY" not in vagrantfile


def test_package_list_is_shared_and_complete():
    packages = rootfs.packages()
    for needed in ("openssh-server", "pdns-server", "pdns-backend-sqlite3", "apache2", "php-fpm", "mariadb-server", "tini"):
        assert needed in packages
    assert "provisioner/lab/packages.txt" in (ROOT / "Vagrantfile").read_text()


def test_cache_key_changes_with_the_package_list(monkeypatch):
    before = rootfs.cache_key()
    monkeypatch.setattr(rootfs, "packages", lambda: ("apache2",))
    assert rootfs.cache_key() != before


def test_mirror_is_taken_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert rootfs.mirror(tmp_path) == "http://mirror.invalid/debian"


def test_mirror_is_taken_from_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://mirror.invalid/other stable main\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
    )
    assert rootfs.mirror(tmp_path) == "http://mirror.invalid/debian"


def test_no_mirror_when_apt_names_none(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert rootfs.mirror(tmp_path) is None


def test_lab_up_refuses_to_shadow_the_package_mirror(monkeypatch):
    import socket

    from provisioner.errors import LabError
    from provisioner.lab import lifecycle

    monkeypatch.setattr(rootfs, "mirror", lambda: "http://mirror.invalid/debian")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("203.0.113.140", 0))])
    with pytest.raises(LabError, match="inside the lab's networks"):
        lifecycle._check_mirror_outside_lab()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(0, 0, 0, "", ("203.0.113.80", 0))])
    lifecycle._check_mirror_outside_lab()


# -- the ACME host (Pebble on ca1) ------------------------------------------------------


def test_acme_host_and_its_urls_come_from_the_topology():
    ca1 = topology.acme_host()
    assert (ca1.name, str(ca1.address), ca1.role, ca1.group) == ("ca1", "10.77.0.41", "acme", "acme")
    assert topology.ACME_DIRECTORY_URL == "https://10.77.0.41:14000/dir"
    assert topology.ACME_MANAGEMENT_URL == "https://10.77.0.41:15000"
    assert (topology.ACME_PORT, topology.ACME_MANAGEMENT_PORT) == (14000, 15000)
    assert topology.ACME_ROOTS == topology.STATE_DIR / "acme" / "roots.pem"
    # Only the ACME host is routed to the web servers' public addresses (for HTTP-01).
    assert [h.name for h in topology.HOSTS if h.reaches_public] == ["ca1"]


def test_inventory_public_networks_match_topology():
    data = yaml.safe_load((ROOT / "inventory/lab/hosts.yml").read_text())
    assert data["all"]["vars"]["lab_public_networks"] == [str(n) for n in topology.LAB_PUBLIC_NETWORKS]


def test_pebble_is_in_the_package_list_and_its_init_script_ships():
    assert "pebble" in rootfs.packages()
    init = (ROOT / "provisioner/lab/files/pebble.init").read_text()
    for action in ("start)", "stop)", "restart|", "status)"):
        assert action in init
    setup = (ROOT / "provisioner/lab/scripts/setup-host.sh").read_text()
    # Pebble's settings, for the init script and the systemd unit alike.
    defaults = re.search(r"cat > /etc/default/pebble <<CONF\n(.*?)\nCONF\n", setup, re.S).group(1).split("\n")
    assert defaults == ["PEBBLE_DNS_SERVER=$ns1:53", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0",
                        "PEBBLE_AUTHZREUSE=0"]
    # Real validation in both labs: never the shortcut that accepts every challenge.
    assert "PEBBLE_VA_ALWAYS_VALID=" not in setup


@pytest.fixture
def lab_ca(tmp_path, monkeypatch):
    from provisioner import tls

    monkeypatch.setattr(topology, "CA_DIR", tmp_path / "ca")
    tls.ensure_lab_ca(topology.CA_DIR)
    return topology.CA_DIR


def test_pebble_https_certificate_is_signed_by_the_lab_ca_for_its_address_and_name(lab_ca):
    import ipaddress

    from cryptography import x509

    from provisioner.lab import lifecycle

    bundle = lifecycle._acme_tls()
    cert = x509.load_pem_x509_certificate(bundle.cert.encode())
    ca = x509.load_pem_x509_certificate((lab_ca / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ca1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.77.0.41")]
    assert "PRIVATE KEY" in bundle.key and "PRIVATE KEY" not in bundle.cert
    # Only ca1's setup script receives it; the key is in the script's text, not argv.
    env = lifecycle._lab_env(topology.acme_host(), bundle)
    assert env["PEBBLE_TLS_KEY"] == bundle.key and env["LAB_ROLE"] == "acme"
    assert env["ACME_PORT"] == "14000" and env["ACME_MANAGEMENT_PORT"] == "15000"
    assert "PEBBLE_TLS_KEY" not in lifecycle._lab_env(topology.host("web1"), bundle)


def _root(name):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_refresh_acme_roots_adds_each_new_root_and_keeps_the_earlier_ones(tmp_path, monkeypatch, lab_ca):
    from cryptography import x509

    from provisioner.errors import LabError
    from provisioner.lab import guard, lifecycle

    monkeypatch.setattr(topology, "ACME_DIR", tmp_path / "acme")
    monkeypatch.setattr(topology, "ACME_ROOTS", tmp_path / "acme" / "roots.pem")
    checked, asked = [], []
    monkeypatch.setattr(guard, "require_lab_route", lambda a: checked.append(str(a)) or a)
    served = {"root": _root("Pebble Root CA 1")}

    class Response:
        def __init__(self, content, status=200):
            self.content, self.status_code = content, status

        def raise_for_status(self):
            if self.status_code != 200:
                raise lifecycle.requests.HTTPError(f"{self.status_code}")

    def get(url, verify, timeout):
        asked.append((url, verify))
        return Response(served["root"]) if served["root"] else Response(b"", 503)

    monkeypatch.setattr(lifecycle.requests, "get", get)
    first = lifecycle.refresh_acme_roots()
    assert len(first) == 1
    # The same root again (no restart): nothing is added.
    assert lifecycle.refresh_acme_roots() == first
    # A restart makes a new root: added after the first, which stays.
    served["root"] = _root("Pebble Root CA 2")
    both = lifecycle.refresh_acme_roots()
    stored = x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes())
    assert stored == both and len(both) == 2 and both[0] == first[0]
    assert [r.subject.rfc4514_string() for r in stored] == ["CN=Pebble Root CA 1", "CN=Pebble Root CA 2"]
    # Every request went to the management interface, verified by the lab CA, behind the guard.
    assert set(asked) == {("https://10.77.0.41:15000/roots/0", str(lab_ca / "ca.crt"))}
    assert checked == ["10.77.0.41"] * 3
    # Pebble not answering: a LabError naming the host and the file is left as it was.
    served["root"] = None
    with pytest.raises(LabError, match="ca1: cannot read Pebble's root"):
        lifecycle.refresh_acme_roots()
    assert x509.load_pem_x509_certificates(topology.ACME_ROOTS.read_bytes()) == both


def test_a_damaged_roots_file_is_reported_not_overwritten(tmp_path, monkeypatch, lab_ca):
    from provisioner.errors import LabError
    from provisioner.lab import guard, lifecycle

    monkeypatch.setattr(topology, "ACME_DIR", tmp_path / "acme")
    monkeypatch.setattr(topology, "ACME_ROOTS", tmp_path / "acme" / "roots.pem")
    topology.ACME_DIR.mkdir()
    topology.ACME_ROOTS.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(guard, "require_lab_route", lambda a: a)
    root = _root("Pebble Root CA 3")
    monkeypatch.setattr(lifecycle.requests, "get", lambda url, verify, timeout: type(
        "R", (), {"content": root, "raise_for_status": lambda self: None})())
    with pytest.raises(LabError, match="roots.pem is not a PEM bundle"):
        lifecycle.refresh_acme_roots()
    assert b"not base64" in topology.ACME_ROOTS.read_bytes()
