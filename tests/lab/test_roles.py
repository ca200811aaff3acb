"""The Ansible roles behind `provision hosting`, applied to the lab's hosts.

Each group of checks shares one apply: a dedicated public address on web1, a
site database on db1, and three sites on web1 (TLS with rate limit; plain on
the dedicated address; suspended without PHP). The roles are applied to these
two hosts on purpose, not through placement (web2 and db2 are the same roles). Everything the tests create is
named `rt<random>` and removed again at the end.
"""

import io
import secrets
import shlex
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
import requests

from provisioner import runner
from provisioner.errors import HostError
from provisioner.lab import guard, remote, topology

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventory/lab"
ZONE = topology.ZONES[0]
WEB = "web1"
DB = "db1"
WEB_ADDRESS = str(topology.host(WEB).address)
SHARED_IP = str(topology.host(WEB).public_addresses[0].ip)
MARKER = "provisioner placeholder"


def _token() -> str:
    return secrets.token_hex(3)


def _apply_web(sites, secrets_=None, **kwargs):
    return runner.run_playbook("web_site.yml", INVENTORY, {WEB}, extravars={"web_site__sites": sites},
                               secrets=secrets_, limit=WEB, **kwargs)


def _apply_db(databases, secrets_=None, **kwargs):
    return runner.run_playbook("db_site.yml", INVENTORY, {DB}, extravars={"mariadb_site__databases": databases},
                               secrets=secrets_, **kwargs)


def _apply_ip(addresses, **kwargs):
    return runner.run_playbook("public_ip.yml", INVENTORY, {WEB}, extravars={"public_ip__addresses": addresses},
                               limit=WEB, **kwargs)


def _site(name: str, listen_ip: str = SHARED_IP, **extra) -> dict:
    fqdn = f"{name}.{ZONE}"
    site = {"fqdn": fqdn, "user": f"w-{name}", "home": f"/srv/www/{fqdn}", "docroot": f"/srv/www/{fqdn}/public",
            "logdir": f"/var/log/apache2/sites/{fqdn}", "php": True, "php_version": "8.2", "pool": fqdn,
            "listen_ip": listen_ip, "tls": False, "bandwidth_kbps": 0, "quota_mb": 512, "state": "present",
            "rotate_password": False}
    site.update(extra)
    return site


def _absent(site: dict) -> dict:
    return {**site, "state": "absent"}


def _password() -> str:
    # A quote and a backslash-free mix: exercises the SQL escaping, fits an option file.
    return secrets.token_urlsafe(18) + "'q"


def _sha512(password: str) -> str:
    """SHA-512 crypt hash; the password goes to openssl on stdin, never argv."""
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                          check=True).stdout.strip()


def _certificate(workdir: Path, fqdn: str) -> dict:
    """A throwaway CA and a certificate for fqdn signed by it: {cert, key, chain}."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=rt test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "site.key", "-out", "site.csr", "-subj", f"/CN={fqdn}")
    (workdir / "ext").write_text(f"subjectAltName=DNS:{fqdn}\n")
    openssl("x509", "-req", "-in", "site.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "site.crt", "-days", "2", "-extfile", "ext")
    return {name: (workdir / f).read_text() for name, f in
            (("cert", "site.crt"), ("key", "site.key"), ("chain", "ca.crt"))}


def _curl(url: str, fqdn: str, address: str, *extra: str) -> tuple[str, str]:
    """(status and redirect, body) of a request from the controller, as a browser would for fqdn."""
    guard.require_lab_route(address)
    port = "443" if url.startswith("https") else "80"
    out = subprocess.run(
        ["curl", "-sS", "-k", "--max-time", "10", "--resolve", f"{fqdn}:{port}:{address}",
         "-w", "\n%{http_code} %{redirect_url}", *extra, url],
        capture_output=True, text=True, check=True).stdout
    body, _, status = out.rpartition("\n")
    return status.strip(), body


def _sftp(site: dict, password: str) -> paramiko.SSHClient:
    guard.require_lab_route(WEB_ADDRESS)
    client = paramiko.SSHClient()
    client.load_host_keys(str(topology.KNOWN_HOSTS))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(WEB_ADDRESS, username=site["user"], password=password, timeout=10,
                   allow_agent=False, look_for_keys=False)
    return client


def _host_script(name: str, script: str, stdin: str = "") -> tuple[int, str]:
    """Run a script as the deploy account; stdin carries anything secret."""
    client = remote.connect(topology.host(name))
    try:
        channel_in, out, err = client.exec_command(script)
        channel_in.write(stdin)
        channel_in.channel.shutdown_write()
        text = out.read().decode() + err.read().decode()
        return out.channel.recv_exit_status(), text
    finally:
        client.close()


def _mysql_from_web1(user: str, password: str, sql: str) -> tuple[int, str]:
    """Log in to db1 from web1 over TCP; the password goes in a 0600 option file fed on stdin."""
    script = (
        "set -e; umask 077; f=$(mktemp); trap 'rm -f \"$f\"' EXIT; cat > \"$f\"; "
        f"mysql --defaults-extra-file=\"$f\" -h {topology.host(DB).address} -u {user} -N -B -e \"{sql}\""
    )
    return _host_script(WEB, script, f'[client]\npassword="{password}"\n')


def _free_public_address(host, lab_host) -> str:
    """An address of web1's pool, from its upper end (the toolkit allocates from the lower end),
    that no web server carries: an address on two servers of one bridge would answer from either."""
    taken = " ".join(lab_host(h.name).check_output("ip -o -4 addr show") for h in topology.hosts_of("web"))
    first, last = topology.host(WEB).dedicated_pool
    for _ in range(50):
        candidate = str(last - secrets.randbelow(32))
        if f" {candidate}/" not in taken:
            return candidate
    pytest.fail(f"no free test address in the upper end of {WEB}'s pool {first}-{last}")


# --- public_ip ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dedicated_ip(lab_host):
    """A dedicated address brought up on web1 for this module, taken down at the end."""
    web = lab_host(WEB)
    address = _free_public_address(web, lab_host)
    item = {"address": address, "prefix": 24, "state": "present"}
    try:
        first = _apply_ip([item])
        yield {"address": address, "first": first}
    finally:
        _apply_ip([{**item, "state": "absent"}])


def test_public_ip_is_up_recorded_and_reachable(dedicated_ip, lab_host):
    web = lab_host(WEB)
    address = dedicated_ip["address"]
    assert dedicated_ip["first"].changed.get(WEB, 0) > 0
    assert f" {address}/24 " in web.check_output("ip -o -4 addr show dev eth0")
    # Kept for the server's restarts, with its prefix and interface (playbooks/roles/public_ip/README.md).
    assert f"{address}/24 eth0" in web.file("/etc/provisioner/public-addresses").content_string.splitlines()
    guard.require_lab_route(address)
    with socket.create_connection((address, 80), timeout=5):
        pass
    assert _apply_ip([{"address": address, "prefix": 24, "state": "present"}]).changed.get(WEB, 0) == 0


def test_public_ip_absent_takes_only_that_address_down(lab_host):
    web = lab_host(WEB)
    address = _free_public_address(web, lab_host)
    item = {"address": address, "prefix": 24, "state": "present"}
    before = set(web.check_output("ip -o -4 addr show").splitlines())
    try:
        _apply_ip([item], check=True)
        assert f" {address}/" not in web.check_output("ip -o -4 addr show")
        _apply_ip([item])
    finally:
        _apply_ip([{**item, "state": "absent"}])
    after = web.check_output("ip -o -4 addr show")
    assert f" {address}/" not in after
    assert set(after.splitlines()) == before
    assert f"{address}/" not in web.file("/etc/provisioner/public-addresses").content_string


# --- mariadb_site ---------------------------------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    name = f"rt{_token()}"
    item = {"name": name, "user": name, "client_host": WEB_ADDRESS, "state": "present", "rotate_password": False}
    password = _password()
    artifacts = tmp_path_factory.mktemp("db-artifacts")
    try:
        first = _apply_db([item], {"db_passwords": {name: password}}, artifact_dir=artifacts)
        yield {"item": item, "password": password, "first_password": password, "first": first,
               "artifacts": artifacts}
    finally:
        _apply_db([{**item, "state": "absent"}])


def test_database_login_from_web1_sees_only_its_own_database(database):
    item, password = database["item"], database["password"]
    assert database["first"].changed.get(DB, 0) > 0
    rc, out = _mysql_from_web1(item["user"], password, "SHOW DATABASES")
    assert rc == 0, out
    assert set(out.split()) == {"information_schema", item["name"]}
    rc, grants = _mysql_from_web1(item["user"], password, "SHOW GRANTS")
    assert rc == 0, grants
    lines = grants.strip().splitlines()
    assert any(f"GRANT ALL PRIVILEGES ON `{item['name']}`.*" in line for line in lines)
    # On *.* only USAGE (no global privilege).
    assert all(line.startswith("GRANT USAGE ON *.*") for line in lines if " ON *.* " in line)
    rc, _ = _mysql_from_web1(item["user"], password + "x", "SELECT 1")
    assert rc != 0


def test_database_rerun_changes_nothing_and_rotation_replaces_the_password(database):
    item = database["item"]
    assert _apply_db([item]).changed.get(DB, 0) == 0
    new = _password()
    rotated = _apply_db([{**item, "rotate_password": True}], {"db_passwords": {item["name"]: new}})
    assert rotated.changed.get(DB, 0) > 0
    assert _mysql_from_web1(item["user"], new, "SELECT 1")[0] == 0
    assert _mysql_from_web1(item["user"], database["password"], "SELECT 1")[0] != 0
    database["password"] = new


def test_database_check_mode_and_refusals_change_nothing(lab_host):
    db = lab_host(DB)
    name = f"rt{_token()}"
    item = {"name": name, "user": name, "client_host": WEB_ADDRESS, "state": "present"}
    _apply_db([item], {"db_passwords": {name: _password()}}, check=True)
    with pytest.raises(HostError):
        _apply_db([item])  # no password for a new user
    with pytest.raises(HostError):
        _apply_db([{**item, "name": "rt%", "user": "rt%"}], {"db_passwords": {"rt%": _password()}})
    found = db.check_output("mysql -N -B -e %s",
                            f"SELECT COUNT(*) FROM mysql.user WHERE User='{name}' "
                            f"UNION ALL SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{name}'")
    assert found.split() == ["0", "0"]


def test_database_absent_drops_user_and_database(lab_host):
    db = lab_host(DB)
    name = f"rt{_token()}"
    item = {"name": name, "user": name, "client_host": WEB_ADDRESS, "state": "present"}
    _apply_db([item], {"db_passwords": {name: _password()}})
    assert _apply_db([{**item, "state": "absent"}]).changed.get(DB, 0) > 0
    found = db.check_output("mysql -N -B -e %s",
                            f"SELECT COUNT(*) FROM mysql.user WHERE User='{name}' "
                            f"UNION ALL SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{name}'")
    assert found.split() == ["0", "0"]
    assert _apply_db([{**item, "state": "absent"}]).changed.get(DB, 0) == 0


# --- web_site -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sites(dedicated_ip, lab_host, tmp_path_factory):
    """Three sites in one apply: TLS + rate limit, plain on the dedicated IP, suspended without PHP."""
    token = _token()
    tls_site = _site(f"rt{token}a", tls=True, bandwidth_kbps=1000)
    plain = _site(f"rt{token}b", listen_ip=dedicated_ip["address"])
    suspended = _site(f"rt{token}c", php=False, suspended=True)
    every = [tls_site, plain, suspended]
    passwords = {s["fqdn"]: _password() for s in every}
    certificate = _certificate(tmp_path_factory.mktemp("tls"), tls_site["fqdn"])
    given = {"sftp_password_hashes": {fqdn: _sha512(p) for fqdn, p in passwords.items()},
             "tls": {tls_site["fqdn"]: certificate}}
    artifacts = tmp_path_factory.mktemp("web-artifacts")
    # Sites other tests leave half-made (refused runs); removed with the rest.
    leftovers = []
    state = {"tls": tls_site, "plain": plain, "suspended": suspended, "passwords": passwords,
             "secrets": given, "artifacts": artifacts, "leftovers": leftovers, "removed": False}
    _wait_for_a_clean_apache(lab_host(WEB))
    try:
        state["first"] = _apply_web(every, given, artifact_dir=artifacts)
        yield state
    finally:
        if not state["removed"] or leftovers:
            _apply_web([_absent(s) for s in ([] if state["removed"] else every) + leftovers])


def test_tls_site_redirects_and_serves_the_placeholder(sites):
    site = sites["tls"]
    fqdn = site["fqdn"]
    assert sites["first"].changed.get(WEB, 0) > 0
    assert _curl(f"http://{fqdn}/", fqdn, SHARED_IP)[0] == f"301 https://{fqdn}/"
    status, body = _curl(f"https://{fqdn}/", fqdn, SHARED_IP)
    assert status.split()[0] == "200"
    assert MARKER in body and fqdn in body


def test_plain_site_serves_on_the_dedicated_address_by_host_header(sites, dedicated_ip):
    site = sites["plain"]
    address = guard.require_lab_route(dedicated_ip["address"])
    response = requests.get(f"http://{address}/", headers={"Host": site["fqdn"]}, timeout=5, allow_redirects=False)
    assert response.status_code == 200
    assert MARKER in response.text and site["fqdn"] in response.text
    # The shared address does not serve it: another vhost answers there instead.
    shared = requests.get(f"http://{guard.require_lab_route(SHARED_IP)}/", headers={"Host": site["fqdn"]},
                          timeout=5, allow_redirects=False)
    assert f"<h1>{site['fqdn']}</h1>" not in shared.text


def test_suspended_site_answers_503_and_refuses_php(sites):
    site = sites["suspended"]
    status, body = _curl(f"http://{site['fqdn']}/", site["fqdn"], SHARED_IP)
    assert status.split()[0] == "503"
    assert "pemeliharaan" in body


def test_files_accounts_and_directives_on_web1(sites, lab_host):
    web = lab_host(WEB)
    tls_site, plain = sites["tls"], sites["plain"]
    key, cert = (f"/etc/ssl/provisioner/{tls_site['fqdn']}.{ext}" for ext in ("key", "crt"))
    paths = [p for site in (tls_site, plain) for p in (site["home"], site["docroot"], site["logdir"])] + [key, cert]
    owners = {}
    for line in web.check_output("stat -c '%U %G %a %n' -- " + " ".join(shlex.quote(p) for p in paths)).splitlines():
        user, group, mode, path = line.split(" ", 3)
        owners[path] = (user, group, mode)
    for site in (tls_site, plain):
        assert owners[site["home"]] == ("root", site["user"], "750")
        assert owners[site["docroot"]] == (site["user"], site["user"], "750")
        assert owners[site["logdir"]] == ("root", "adm", "750")
        account = web.check_output("getent passwd %s", site["user"]).split(":")
        assert account[5:] == [site["home"], "/usr/sbin/nologin"]
        assert site["user"] in web.check_output("getent group sftp-sites").split(":")[3].split(",")
        pool = web.file(f"/etc/php/8.2/fpm/pool.d/{site['pool']}.conf").content_string
        assert f"user = {site['user']}" in pool
        assert f"listen = /run/php/{site['pool']}.sock" in pool
        assert f"php_admin_value[open_basedir] = {site['home']}/" in pool
    assert owners[key] == ("root", "root", "600") and owners[cert][2] == "644"
    # Apache serves through the site groups; PHP-FPM's master (so every worker) has umask 0027.
    for site in (tls_site, plain):
        assert "www-data" in web.check_output("getent group %s", site["user"]).split(":")[3].split(",")
    assert "umask 0027" in web.file("/etc/default/php-fpm8.2").content_string
    assert "UMask=0027" in web.file("/etc/systemd/system/php8.2-fpm.service.d/provisioner.conf").content_string
    assert web.check_output("sed -n 's/^Umask:[[:space:]]*//p' /proc/$(cat /run/php/php8.2-fpm.pid)/status") == "0027"
    assert web.file(cert).content_string.count("BEGIN CERTIFICATE") == 2
    vhost = web.file(f"/etc/apache2/sites-available/{tls_site['fqdn']}.conf").content_string
    assert "SetOutputFilter RATE_LIMIT" in vhost and "SetEnv rate-limit 125" in vhost
    assert "Options -Indexes" in vhost
    assert "RATE_LIMIT" not in web.file(f"/etc/apache2/sites-available/{plain['fqdn']}.conf").content_string
    assert web.file(f"/etc/apache2/sites-enabled/{tls_site['fqdn']}.conf").is_symlink
    assert not web.file(f"/etc/php/8.2/fpm/pool.d/{sites['suspended']['pool']}.conf").exists
    dropin = web.file("/etc/ssh/sshd_config.d/20-provisioner-sftp.conf").content_string
    assert "Match Group sftp-sites" in dropin and "ChrootDirectory %h" in dropin
    # The Match block stays in its file: everyone else keeps keys only.
    assert "passwordauthentication no" in web.check_output("sshd -T")


def test_sftp_is_chrooted_and_php_runs_as_the_site_user(sites):
    probe = b"<?php echo posix_getpwuid(posix_geteuid())['name'], '|', ini_get('open_basedir');\n"
    for key, address, scheme in (("tls", SHARED_IP, "https"), ("plain", sites["plain"]["listen_ip"], "http")):
        site = sites[key]
        client = _sftp(site, sites["passwords"][site["fqdn"]])
        try:
            sftp = client.open_sftp()
            assert sorted(sftp.listdir("/")) == ["public", "sessions", "tmp"]
            assert sorted(sftp.listdir("/../..")) == ["public", "sessions", "tmp"]
            with pytest.raises(IOError):
                sftp.listdir("/etc")
            with pytest.raises(IOError):
                sftp.putfo(io.BytesIO(b"x"), "/outside.txt")
            with pytest.raises(IOError):
                sftp.putfo(io.BytesIO(b"x"), "/../../etc/rt-escape.txt")
            sftp.putfo(io.BytesIO(probe), "/public/whoami.php")
            sftp.close()
        finally:
            client.close()
        status, body = _curl(f"{scheme}://{site['fqdn']}/whoami.php", site["fqdn"], address)
        assert status.split()[0] == "200", body
        assert body == f"{site['user']}|{site['home']}/"


def test_sftp_shell_and_wrong_password_are_refused(sites):
    site = sites["plain"]
    with pytest.raises(paramiko.AuthenticationException):
        _sftp(site, "wrong-" + sites["passwords"][site["fqdn"]]).close()
    client = _sftp(site, sites["passwords"][site["fqdn"]])
    try:
        _, out, _ = client.exec_command("id")
        assert b"uid=" not in out.read()
    finally:
        client.close()


def test_a_rerun_converges_old_modes_once_keeps_the_agency_content_then_changes_nothing(sites, lab_host):
    """Sites made before the isolation (0755 homes and docroots, 0644 files) are brought in line by a
    rerun that keeps what the agency uploaded; the run after it changes nothing.

    One converging run and one idempotent run prove both points: a separate idempotence run right
    after the first apply would repeat the last one (each web run of the three sites takes tens of
    seconds)."""
    web = lab_host(WEB)
    site = sites["plain"]
    client = _sftp(site, sites["passwords"][site["fqdn"]])
    try:
        sftp = client.open_sftp()
        sftp.putfo(io.BytesIO(b"agency content\n"), "/public/index.html")
        sftp.close()
    finally:
        client.close()
    home, docroot = site["home"], site["docroot"]
    web.run_test("chown root:root %s && chmod 0755 /srv/www %s %s && chmod 0666 %s/index.html",
                 home, home, docroot, docroot)
    # The host settings the role reads first and writes only where they differ, changed by hand.
    sshd, fpm_dropin, fpm_default = ("/etc/ssh/sshd_config.d/20-provisioner-sftp.conf",
                                     "/etc/systemd/system/php8.2-fpm.service.d/provisioner.conf",
                                     "/etc/default/php-fpm8.2")
    wanted = {path: web.file(path).content_string for path in (sshd, fpm_dropin, fpm_default)}
    web.run_test("echo '# edited by hand' >> %s && chmod 0600 %s && sed -i 's/^umask .*/umask 0022/' %s",
                 sshd, fpm_dropin, fpm_default)
    every = [sites["tls"], sites["plain"], sites["suspended"]]
    assert _apply_web(every, sites["secrets"]).changed.get(WEB, 0) > 0
    assert {path: web.file(path).content_string for path in wanted} == wanted
    assert web.file(fpm_dropin).mode == 0o644
    modes = web.check_output("stat -c '%%U:%%G %%a' /srv/www %s %s %s/index.html", home, docroot, docroot)
    user = site["user"]
    assert modes.splitlines() == ["root:root 711", f"root:{user} 750", f"{user}:{user} 750", f"{user}:{user} 640"]
    again = _apply_web(every, sites["secrets"])
    assert again.changed.get(WEB, 0) == 0
    assert web.file(f"{docroot}/index.html").content_string == "agency content\n"


def test_no_secret_reaches_the_runner_artifacts(sites, database):
    tls_key_body = sites["secrets"]["tls"][sites["tls"]["fqdn"]]["key"].splitlines()[1]
    needles = ([p for p in sites["passwords"].values()] + list(sites["secrets"]["sftp_password_hashes"].values())
               + [tls_key_body, database["first_password"]])
    files = [f for d in (sites["artifacts"], database["artifacts"]) for f in d.rglob("*") if f.is_file()]
    assert files, "the runs left no artifacts to inspect"
    for path in files:
        text = path.read_text(errors="replace")
        for needle in needles:
            assert needle not in text, f"a secret reached {path}"


def test_check_mode_of_a_new_site_changes_nothing(sites, lab_host):
    web = lab_host(WEB)
    site = _site(f"rt{_token()}d", tls=True)
    given = {"sftp_password_hashes": {site["fqdn"]: _sha512(_password())},
             "tls": {site["fqdn"]: sites["secrets"]["tls"][sites["tls"]["fqdn"]]}}
    _apply_web([site], given, check=True)
    assert not web.user(site["user"]).exists
    assert _existing(web, _site_paths(site)) == set()


def _wait_for_a_clean_apache(web, timeout: float = 60.0):
    """Others share the lab: wait until their own experiments leave Apache's config clean."""
    deadline = time.monotonic() + timeout
    while web.run("apache2ctl configtest").rc != 0:
        if time.monotonic() > deadline:
            pytest.fail("Apache's configuration on web1 stays broken by something outside these tests")
        time.sleep(2)


def _site_paths(site: dict) -> list[str]:
    """Every path a site has on the web server."""
    return [site["home"], site["logdir"], f"/etc/apache2/sites-available/{site['fqdn']}.conf",
            f"/etc/apache2/sites-enabled/{site['fqdn']}.conf", f"/etc/php/8.2/fpm/pool.d/{site['pool']}.conf",
            f"/etc/ssl/provisioner/{site['fqdn']}.crt", f"/etc/ssl/provisioner/{site['fqdn']}.key",
            f"/run/php/{site['pool']}.sock"]


def _existing(web, paths) -> set[str]:
    """Which of the paths exist (dangling links included), in one round trip."""
    script = "for p in " + " ".join(shlex.quote(p) for p in paths) + \
        '; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    return set(web.check_output(script).splitlines())


def _web_new_site_files_absent(web, site):
    # A refused run may leave the account and directories (removed later), never configuration.
    assert _existing(web, _site_paths(site)[2:]) == set()


def _stdout(artifacts: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in artifacts.rglob("stdout"))


def test_configtest_failure_rolls_back_and_earlier_sites_keep_serving(sites, lab_host, tmp_path):
    web = lab_host(WEB)
    token = _token()
    broken = f"/etc/apache2/conf-enabled/rt{token}-broken.conf"
    new = _site(f"rt{token}e")
    changed_tls = {**sites["tls"], "bandwidth_kbps": 4000}
    vhost_path = f"/etc/apache2/sites-available/{sites['tls']['fqdn']}.conf"
    vhost_before = web.file(vhost_path).content_string
    sites["leftovers"].append(new)
    _wait_for_a_clean_apache(web)
    try:
        web.run_test("printf 'ThisIsNotAnApacheDirective on\\n' > %s", broken)
        with pytest.raises(HostError):
            _apply_web([new, changed_tls], {"sftp_password_hashes": {new["fqdn"]: _sha512(_password())}},
                       artifact_dir=tmp_path)
    finally:
        web.run_test("rm -f %s", broken)
    assert "configtest refused" in _stdout(tmp_path)
    _web_new_site_files_absent(web, new)
    assert web.file(vhost_path).content_string == vhost_before
    assert web.run("apache2ctl configtest").rc == 0
    fqdn = sites["tls"]["fqdn"]
    assert _curl(f"https://{fqdn}/", fqdn, SHARED_IP)[0].split()[0] == "200"


def test_duplicate_server_names_are_refused(sites, lab_host, tmp_path):
    web = lab_host(WEB)
    token = _token()
    twice = _site(f"rt{token}f")
    hashes = {"sftp_password_hashes": {twice["fqdn"]: _sha512(_password())}}
    sites["leftovers"].append(twice)
    _wait_for_a_clean_apache(web)
    # Two items for one name in one run: refused before anything changes.
    with pytest.raises(HostError):
        _apply_web([twice, {**twice, "user": f"w-rt{token}g", "home": f"/srv/www/rt{token}g.{ZONE}",
                            "docroot": f"/srv/www/rt{token}g.{ZONE}/public"}], hashes)
    assert not web.user(twice["user"]).exists
    _web_new_site_files_absent(web, twice)
    # A hand-made vhost already serving the name on the same address: refused and rolled back.
    hand_made = f"/etc/apache2/sites-enabled/rt{token}-hand.conf"
    try:
        web.run_test("printf '<VirtualHost %s:80>\\n ServerName %s\\n DocumentRoot /var/www/html\\n</VirtualHost>\\n' > %s",
                     SHARED_IP, twice["fqdn"], hand_made)
        with pytest.raises(HostError):
            _apply_web([twice], hashes, artifact_dir=tmp_path)
        assert "duplicate ServerName" in _stdout(tmp_path)
        _web_new_site_files_absent(web, twice)
        assert web.file(hand_made).exists
    finally:
        web.run_test("rm -f %s", hand_made)
    fqdn = sites["tls"]["fqdn"]
    assert _curl(f"https://{fqdn}/", fqdn, SHARED_IP)[0].split()[0] == "200"


def test_a_pool_php_fpm_refuses_rolls_back_and_reloads_nothing(sites, lab_host, tmp_path):
    """The one check call (web_site_check) runs php-fpm -t too: a pool it refuses puts every file back."""
    web = lab_host(WEB)
    token = _token()
    new = _site(f"rt{token}p")
    new["pool_content"] = f"[{new['pool']}]\nthis line is not a PHP-FPM setting\n"
    sites["leftovers"].append(new)
    _wait_for_a_clean_apache(web)
    reloads = 'grep -c "graceful restart" /var/log/apache2/error.log; grep -c "Reloading in progress" /var/log/php8.2-fpm.log'
    before = web.run(reloads).stdout
    with pytest.raises(HostError):
        _apply_web([new], {"sftp_password_hashes": {new["fqdn"]: _sha512(_password())}}, artifact_dir=tmp_path)
    assert "php-fpm8.2 -t refused the new configuration" in _stdout(tmp_path)
    _web_new_site_files_absent(web, new)
    assert web.run("php-fpm8.2 -t").rc == 0
    # Nothing reloaded, and the copy of the previous files went with the put-back.
    assert web.run(reloads).stdout == before
    assert web.check_output("ls -A /var/lib/provisioner/web_site") == ""
    fqdn = sites["tls"]["fqdn"]
    assert _curl(f"https://{fqdn}/", fqdn, SHARED_IP)[0].split()[0] == "200"


def test_refused_values_change_nothing(lab_host):
    web = lab_host(WEB)
    site = _site(f"rt{_token()}h")
    hashes = {"sftp_password_hashes": {site["fqdn"]: _sha512(_password())}}
    for bad in ({"fqdn": "rt x.tarakankota.go.id"}, {"docroot": "/etc/apache2"}, {"user": "root"}):
        with pytest.raises(HostError):
            _apply_web([{**site, **bad}], hashes)
    with pytest.raises(HostError):
        _apply_web([site])  # a new account needs its password hash
    assert not web.user(site["user"]).exists
    assert not web.file(site["home"]).exists


def test_zz_absent_removes_everything(sites, lab_host):
    web = lab_host(WEB)
    every = [sites["tls"], sites["plain"], sites["suspended"]]
    removed = _apply_web([_absent(s) for s in every + sites["leftovers"]])
    sites["removed"] = True
    sites["leftovers"].clear()
    assert removed.changed.get(WEB, 0) > 0
    assert _existing(web, [p for site in every for p in _site_paths(site)]) == set()
    accounts = web.check_output("getent passwd; getent group")
    for site in every:
        assert f"\n{site['user']}:" not in "\n" + accounts
    assert "\nsftp-sites:" in accounts and "\nwww-data:" in accounts
    # The dedicated address lost its last site, so its default vhosts went with it.
    defaults = web.file("/etc/apache2/conf-available/provisioner-default-vhosts.conf")
    assert not defaults.exists or f"<VirtualHost {sites['plain']['listen_ip']}:" not in defaults.content_string
    fqdn = sites["tls"]["fqdn"]
    assert f"<h1>{fqdn}</h1>" not in _curl(f"http://{fqdn}/", fqdn, SHARED_IP)[1]
