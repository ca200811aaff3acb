"""Two agencies on one web server cannot reach each other, and a name nobody serves gets nobody's site.

One module-wide pair of live sites made by `provision hosting` in its own state home: A on the
shared address with TLS, B on a dedicated address, both on web1 (the state home's inventory is the
lab's with web1 as its only web server, since placement would otherwise spread the two). B keeps a configuration file with a secret;
A tries to read it as its system user, from PHP (every way the issue names) and over SFTP.
Both are removed at the end.
"""

import io
import json
import secrets
import socket
import ssl
import subprocess

import paramiko
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioner import audit, credentials
from provisioner.lab import guard, topology
from provisioner.store.models import SiteRow

from labkit import ROOT, Office

WEB = "web1"
SHARED_IP = "203.0.113.10"
DEFAULTS = "/etc/apache2/conf-available/provisioner-default-vhosts.conf"
DEFAULTS_ENABLED = "/etc/apache2/conf-enabled/provisioner-default-vhosts.conf"
DEFAULT_MARKER = "<!-- provisioner default vhost -->"
PROCESS_FUNCTIONS = ("shell_exec", "exec", "proc_open", "system", "passthru", "popen")

# Every way into B's files the issue names, each result reported by name. A disabled function
# throws Error ("Call to undefined function") in PHP 8; open_basedir makes the rest fail.
ATTACK = r"""<?php
header('Content-Type: application/json');
$file = '__B_HOME__/public/config.php';
$out = ['whoami' => posix_getpwuid(posix_geteuid())['name']];
$try = function ($name, $fn) use (&$out) {
    try { $out[$name] = $fn(); } catch (Throwable $e) { $out[$name] = get_class($e) . ': ' . $e->getMessage(); }
};
$try('file_get_contents', fn() => @file_get_contents($file));
$try('glob', fn() => @glob('__B_HOME__/public/*'));
$try('glob_wrapper', fn() => iterator_to_array(new DirectoryIterator('glob://__B_HOME__/public/*'), false));
$try('scandir', fn() => @scandir('__B_HOME__'));
$try('shell_exec', fn() => shell_exec('cat ' . $file));
$try('exec', function () use ($file) { exec('cat ' . $file, $lines); return implode("\n", $lines); });
$try('proc_open', function () use ($file) {
    $p = proc_open(['cat', $file], [1 => ['pipe', 'w']], $pipes);
    return stream_get_contents($pipes[1]);
});
$try('system', fn() => system('cat ' . $file));
$try('passthru', fn() => passthru('cat ' . $file));
$try('popen', fn() => stream_get_contents(popen('cat ' . $file, 'r')));
$try('etc_passwd', fn() => @file_get_contents('/etc/passwd'));
foreach (['shell_exec', 'exec', 'proc_open', 'system', 'passthru', 'popen', 'putenv'] as $f) {
    $out['exists'][$f] = function_exists($f);
}
$out['disable_functions'] = ini_get('disable_functions');
$tmp = '__A_HOME__/tmp/umask-probe';
file_put_contents($tmp, 'x');
$out['tmp_mode'] = sprintf('%o', fileperms($tmp) & 0777);
unlink($tmp);
echo json_encode($out);
"""


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    home = tmp_path_factory.mktemp("isolation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVISIONER_HOME", str(home))
        mp.delenv("PROVISIONER_STATE_URL", raising=False)
        mp.delenv("PROVISIONER_CONFIG", raising=False)
        mp.chdir(home)
        _one_web_server(home)
        office = Office(home)
        try:
            a = office.through_review("tarakan-simkes.yaml", database="false", tls="true")
            b = office.through_review("tarakan-simkes.yaml", database="false", tls="false", dedicated_ip="true")
            for request_id in (a, b):
                office.approve_without_hook(request_id)
            office.hosting.apply([a, b])
            with office.store.session() as session:
                rows = {r.request_id: r.fqdn for r in session.query(SiteRow)}
            site_a, site_b = office.hosting.recorded_sites([rows[a], rows[b]])
            assert site_a.web_host == site_b.web_host == WEB  # neighbours on one server
            secret = "RAHASIA-" + secrets.token_hex(12)
            password = {s.fqdn: credentials.get(office.store, office.hosting.box, s.fqdn)["sftp"]
                        for s in (site_a, site_b)}
            with _sftp(site_b, password[site_b.fqdn]) as sftp:
                sftp.putfo(io.BytesIO(f'<?php $db_password = "{secret}";\n'.encode()), "/public/config.php")
                sftp.putfo(io.BytesIO(f"{secret}\n".encode()), "/public/notes.txt")
            attack = ATTACK.replace("__B_HOME__", site_b.names.home).replace("__A_HOME__", site_a.names.home)
            with _sftp(site_a, password[site_a.fqdn]) as sftp:
                sftp.putfo(io.BytesIO(attack.encode()), "/public/attack.php")
            yield {"office": office, "a": site_a, "b": site_b, "secret": secret, "password": password}
        finally:
            office.cleanup()


def _one_web_server(home) -> None:
    """The lab's inventory with WEB as its only web server, as the state home's configuration."""
    inventory = home / "inventory"
    subprocess.run(["cp", "-r", str(ROOT / "inventory" / "lab"), str(inventory)], check=True)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    web = hosts["all"]["children"]["web"]["hosts"]
    hosts["all"]["children"]["web"]["hosts"] = {WEB: web[WEB]}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (home / "provisioner.yaml").write_text(f"hosting:\n  inventory: {inventory}\n")


class _sftp:
    """An SFTP session as a site's account, the web server's host key pinned."""

    def __init__(self, site, password):
        self.site, self.password = site, password

    def __enter__(self) -> paramiko.SFTPClient:
        address = str(guard.require_lab_route(topology.host(WEB).address))
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(topology.KNOWN_HOSTS))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.client.connect(address, username=self.site.names.user, password=self.password, timeout=10,
                            allow_agent=False, look_for_keys=False)
        return self.client.open_sftp()

    def __exit__(self, *exc):
        self.client.close()


def _https(address: str, name: str, path: str = "/") -> tuple[int, str, str]:
    """(status, body, redirect) over HTTPS with SNI `name` at `address`; the certificate is not checked here."""
    guard.require_lab_route(address)
    out = subprocess.run(
        ["curl", "-sS", "-k", "--max-time", "10", "--resolve", f"{name}:443:{address}",
         "-w", "\n%{http_code} %{redirect_url}", f"https://{name}{path}"],
        capture_output=True, text=True, check=True).stdout
    body, _, status = out.rpartition("\n")
    code, _, redirect = status.partition(" ")
    return int(code), body, redirect.strip()


def _certificate_names(address: str, name: str) -> tuple[str, list[str]]:
    """The CN and DNS names of the certificate served at address:443 for SNI `name`."""
    guard.require_lab_route(address)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((address, 443), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    return cn, sans


def _unknown_name() -> str:
    return f"nobody-{secrets.token_hex(4)}.{topology.ZONES[0]}"


def test_a_site_user_cannot_read_or_list_another_sites_files(two_sites, lab_host):
    web, a, b = lab_host(WEB), two_sites["a"], two_sites["b"]
    as_a = f"sudo -n -u {a.names.user} --"
    for command in (f"cat {b.names.docroot}/config.php", f"cat {b.names.docroot}/notes.txt",
                    f"ls {b.names.home}", f"ls {b.names.docroot}", "ls /srv/www"):
        result = web.run(f"{as_a} {command}")
        assert result.rc != 0, command
        assert "Permission denied" in result.stderr, command
        assert two_sites["secret"] not in result.stdout
    # Its own files it reads; the modes say why the others are shut.
    assert web.run(f"{as_a} cat {a.names.docroot}/attack.php").rc == 0
    stats = web.check_output(f"stat -c '%U:%G %a %n' /srv/www {b.names.home} {b.names.docroot} "
                             f"{b.names.docroot}/config.php {b.names.home}/tmp {b.names.home}/sessions")
    u = b.names.user
    assert stats.splitlines() == [
        "root:root 711 /srv/www", f"root:{u} 750 {b.names.home}", f"{u}:{u} 750 {b.names.docroot}",
        f"{u}:{u} 640 {b.names.docroot}/config.php", f"{u}:{u} 700 {b.names.home}/tmp",
        f"{u}:{u} 700 {b.names.home}/sessions"]


def test_a_site_user_sees_only_its_own_processes(two_sites, lab_host):
    web, a = lab_host(WEB), two_sites["a"]
    if "hidepid" not in web.check_output("grep ' /proc ' /proc/mounts"):
        pytest.skip("web1 was started before the lab mounted /proc with hidepid=2: restart the lab")
    uid = web.check_output(f"id -u {a.names.user}")
    seen = web.check_output(f"sudo -n -u {a.names.user} -- ps -eo uid=").split()
    assert seen and set(seen) == {uid}
    # Root (through sudo) still sees every process, its own and the services'.
    assert "0" in web.check_output("ps -eo uid=").split()


def test_php_in_one_site_cannot_read_another_by_any_way(two_sites):
    a, secret = two_sites["a"], two_sites["secret"]
    status, body, _ = _https(a.public_ip, a.fqdn, "/attack.php")
    assert status == 200, body
    assert secret not in body
    seen = json.loads(body)
    assert seen["whoami"] == a.names.user
    assert seen["file_get_contents"] is False
    assert seen["glob"] in ([], False) and seen["scandir"] is False
    assert "config.php" not in json.dumps(seen["glob_wrapper"])
    for name in PROCESS_FUNCTIONS:
        assert seen[name] == f"Error: Call to undefined function {name}()", name
        assert seen["exists"][name] is False
    assert seen["exists"]["putenv"] is False
    assert seen["etc_passwd"] is False
    # What PHP creates is for the site alone (PHP-FPM's umask 0027).
    assert seen["tmp_mode"] == "640"


def test_sftp_of_one_site_cannot_reach_another(two_sites, lab_host):
    a, b = two_sites["a"], two_sites["b"]
    with _sftp(a, two_sites["password"][a.fqdn]) as sftp:
        assert sorted(sftp.listdir("/")) == ["public", "sessions", "tmp"]
        for path in (f"/../{b.fqdn}/public/config.php", f"{b.names.docroot}/config.php", f"/../../srv/www/{b.fqdn}"):
            with pytest.raises(IOError):
                sftp.stat(path)
        with pytest.raises(IOError):
            sftp.listdir("/srv/www")
        sftp.putfo(io.BytesIO(b"uploaded\n"), "/public/upload.txt")
    # Uploads get umask 0027.
    assert lab_host(WEB).check_output(f"stat -c %a {a.names.docroot}/upload.txt") == "640"


def test_both_sites_still_serve_their_pages(two_sites):
    a, b = two_sites["a"], two_sites["b"]
    status, body, _ = _https(a.public_ip, a.fqdn)
    assert status == 200 and f"<h1>{a.fqdn}</h1>" in body
    guard.require_lab_route(b.public_ip)
    response = requests.get(f"http://{b.public_ip}/", headers={"Host": b.fqdn}, timeout=5, allow_redirects=False)
    assert response.status_code == 200 and f"<h1>{b.fqdn}</h1>" in response.text
    # The agency's own files are served too, though only its group may read them.
    notes = requests.get(f"http://{b.public_ip}/notes.txt", headers={"Host": b.fqdn}, timeout=5)
    assert notes.status_code == 200 and two_sites["secret"] in notes.text


@pytest.mark.parametrize("which", ["shared", "dedicated"])
def test_a_name_nobody_serves_gets_the_default_over_http(two_sites, which):
    site = two_sites["a" if which == "shared" else "b"]
    address = str(guard.require_lab_route(site.public_ip))
    for host in (_unknown_name(), address):
        response = requests.get(f"http://{address}/", headers={"Host": host}, timeout=5, allow_redirects=False)
        assert response.status_code == 404, host
        assert DEFAULT_MARKER in response.text and "Location" not in response.headers
        for fqdn in (two_sites["a"].fqdn, two_sites["b"].fqdn):
            assert fqdn not in response.text


@pytest.mark.parametrize("which", ["shared", "dedicated"])
def test_an_unknown_sni_gets_the_default_over_https(two_sites, which):
    site = two_sites["a" if which == "shared" else "b"]
    name = _unknown_name()
    status, body, redirect = _https(site.public_ip, name)
    assert (status, redirect) == (404, "")
    assert DEFAULT_MARKER in body and two_sites["a"].fqdn not in body
    cn, sans = _certificate_names(site.public_ip, name)
    assert cn == "default.invalid" and sans == []


def test_the_audit_finds_a_removed_default_vhost_and_the_fix_restores_it(two_sites, lab_host):
    web, office, a, b = lab_host(WEB), two_sites["office"], two_sites["a"], two_sites["b"]
    saved = web.file(DEFAULTS).content_string
    try:
        web.run_test(f"rm -f {DEFAULTS_ENABLED} {DEFAULTS}")
        report = audit.audit_fix(office.config, office.store, apply=True, work=office.hosting)
        missing = sorted(f.what for f in report.findings if f.kind == "default-vhost-missing")
        assert missing == sorted({f"default vhost of {a.public_ip}", f"default vhost of {b.public_ip}"})
        assert all(f.severity == "high" and f.target == "web" and f.host == WEB
                   for f in report.findings if f.kind == "default-vhost-missing")
        restored = {(c["name"], c["kind"]) for c in report.fix["plan"]["changes"]}
        assert {(a.public_ip, "default vhost"), (b.public_ip, "default vhost")} <= restored
        assert report.fix["applied"]
        assert not [f for f in report.after if f.kind == "default-vhost-missing"]
        assert web.file(DEFAULTS_ENABLED).is_symlink
        text = web.file(DEFAULTS).content_string
        assert f"<VirtualHost {a.public_ip}:443>" in text and f"<VirtualHost {b.public_ip}:80>" in text
    finally:
        # Put the lab back as it was if the fix did not.
        if not web.file(DEFAULTS).exists:
            web.run_test("printf '%%s' %s > %s", saved, DEFAULTS)
        if not web.file(DEFAULTS_ENABLED).exists:
            web.run_test("ln -sf ../conf-available/provisioner-default-vhosts.conf %s", DEFAULTS_ENABLED)
    response = requests.get(f"http://{guard.require_lab_route(b.public_ip)}/", headers={"Host": _unknown_name()},
                            timeout=5, allow_redirects=False)
    assert response.status_code == 404 and DEFAULT_MARKER in response.text
