"""`provision import` without hosts: the probe's parsing, discovery's grouping, adoption's records and
events, the DesiredSite and audit of an adopted site, its suspension swap, the unmanaged list."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from provisioner import audit, importer, naming
from provisioner.audit import Observed, compare
from provisioner.config import Config, default_offices, load_config
from provisioner.errors import Conflict, NotFound, StateError, UserError
from provisioner.hosting import Hosting, Live
from provisioner.lifecycle import Lifecycle
from provisioner.plan import Plan
from provisioner.site import sha256
from provisioner.sop.binding import check_hosting_approval
from provisioner.store.models import Event, RequestRow, SiteRow
from provisioner.targets import adopted as adopted_target
from provisioner.targets import import_probe
from provisioner.targets import web as web_target

ZONE = "tarakankota.go.id"
WEB_ADDR = "10.77.0.21"
SHARED = "203.0.113.10"
OLD = "simkeslama." + ZONE
AVAILABLE = "/etc/apache2/sites-available"
ENABLED = "/etc/apache2/sites-enabled"
TOOLKIT = naming.site_names("simkes", ZONE)


# -- fake live data ------------------------------------------------------------------


def block(name, listen=f"{SHARED}:80", aliases=(), docroot="/var/www/simkeslama", owner="simkeslama",
          sockets=("/run/php/simkeslama.sock",), cert=None):
    return {"listen": [listen], "server_name": name, "aliases": list(aliases), "docroot": docroot,
            "cert_file": cert, "key_file": cert and cert.replace(".crt", ".key"), "chain_file": None,
            "error_log": "${APACHE_LOG_DIR}/simkeslama-error.log", "fpm_sockets": list(sockets),
            "docroot_stat": {"owner": owner, "group": owner, "mode": "0755", "dir": True},
            "cert_not_after": "Jan  1 00:00:00 2030 GMT" if cert else None}


def vhost_file(name, blocks, enabled=True, sha="a" * 64):
    path = f"{AVAILABLE}/{name}"
    links = [{"path": f"{ENABLED}/{name}", "target": f"../sites-available/{name}"}] if enabled else []
    return {"path": path, "links": links, "sha256": sha, "vhosts": blocks}


def pool(name, user, listen, version="8.2", sha="b" * 64):
    return {"file": f"/etc/php/{version}/fpm/pool.d/{name}.conf", "php_version": version, "name": name,
            "user": user, "group": user, "listen": listen, "sha256": sha}


def rrset(name, contents, rtype="A", ours=False, ttl=3600):
    comments = [{"content": "provisioner: request X", "account": "provisioner"}] if ours else []
    return {"name": name, "type": rtype, "ttl": ttl, "records": [{"content": c, "disabled": False} for c in contents],
            "comments": comments}


def web_live():
    return {
        "files": [
            vhost_file("simkes-lama.conf", [block(OLD, aliases=["www." + OLD])]),
            vhost_file("000-default.conf", [block(None, listen="*:80", docroot="/var/www/html", owner="root",
                                                  sockets=())]),
            vhost_file(f"{TOOLKIT.fqdn}.conf", [block(TOOLKIT.fqdn, docroot=TOOLKIT.docroot, owner=TOOLKIT.user,
                                                      sockets=(f"/run/php/{TOOLKIT.fqdn}.sock",))]),
            vhost_file("intranet.conf", [block("intranet." + ZONE, docroot="/var/www/intranet", owner="root",
                                               sockets=())]),
        ],
        "pools": [pool("simkeslama", "simkeslama", "/run/php/simkeslama.sock"),
                  pool("www", "www-data", "/run/php/php8.2-fpm.sock"),
                  pool(TOOLKIT.fqdn, TOOLKIT.user, f"/run/php/{TOOLKIT.fqdn}.sock"),
                  pool("aplikasi-lain", "lain", "127.0.0.1:9001")],
        "users": {"simkeslama": {"uid": 1005, "home": "/var/www/simkeslama", "shell": "/usr/sbin/nologin",
                                 "groups": ["simkeslama"]},
                  "admin": {"uid": 1000, "home": "/home/admin", "shell": "/bin/bash", "groups": ["admin", "sudo"]},
                  "provisioner": {"uid": 1001, "home": "/home/provisioner", "shell": "/bin/bash",
                                  "groups": ["provisioner"]}},
        "addresses": [WEB_ADDR, SHARED],
    }


def db_live():
    grants = ["GRANT USAGE ON *.* TO `simkeslama_u`@`10.77.0.21`",
              "GRANT ALL PRIVILEGES ON `db_simkeslama`.* TO `simkeslama_u`@`10.77.0.21`"]
    return {"databases": ["arsip", "db_simkeslama", TOOLKIT.db_name],
            "accounts": [{"user": "simkeslama_u", "host": WEB_ADDR, "grants": grants, "databases": ["db_simkeslama"]},
                         {"user": "simkeslama_u", "host": "localhost",
                          "grants": ["GRANT USAGE ON *.* TO `simkeslama_u`@`localhost`"], "databases": []},
                         {"user": TOOLKIT.db_user, "host": WEB_ADDR, "grants": [], "databases": [TOOLKIT.db_name]},
                         {"user": "backup", "host": "localhost", "grants": ["GRANT SELECT ON *.* TO `backup`@`localhost`"],
                          "databases": []}]}


def dns_live():
    apex = ZONE + "."
    return {ZONE: {(apex, "SOA"): rrset(apex, ["ns1.x. hostmaster.x. 1 10800 3600 604800 3600"], "SOA"),
                   (apex, "NS"): rrset(apex, [f"ns1.{apex}"], "NS"),
                   (f"ns1.{apex}", "A"): rrset(f"ns1.{apex}", ["203.0.113.1"]),
                   (OLD + ".", "A"): rrset(OLD + ".", [SHARED]),
                   ("intranet." + apex, "A"): rrset("intranet." + apex, [SHARED]),
                   ("lupa." + apex, "A"): rrset("lupa." + apex, ["203.0.113.5"]),
                   (TOOLKIT.fqdn + ".", "A"): rrset(TOOLKIT.fqdn + ".", [SHARED], ours=True)},
            "bulelengkab.go.id": {}}


# The hand-made site lives on web1 and db1; the lab's other servers (web2, db2) are freshly
# prepared and hold nothing of it.
HAND_MADE_WEB, HAND_MADE_DB = "web1", "db1"


def empty_web(host):
    return {"files": [], "pools": [], "users": {}, "addresses": [host.address]}


class FakeReader:
    last = None  # the web host "now" for a removal's plan: as the latest reader sees it

    def __init__(self):
        self.web_data, self.db_data, self.dns_data = web_live(), db_live(), dns_live()
        self.read = []
        FakeReader.last = self

    def web(self, host):
        self.read.append(host.name)
        return self.web_data if host.name == HAND_MADE_WEB else empty_web(host)

    def db(self, host):
        self.read.append(host.name)
        return self.db_data if host.name == HAND_MADE_DB else {"databases": [], "accounts": []}

    def dns(self, zones):
        return {z: self.dns_data.get(z, {}) for z in zones}


@pytest.fixture(autouse=True)
def web_host_now(monkeypatch):
    """A removal reads the web host whole again (targets/adopted.read_hosts): here it sees what the
    latest FakeReader holds, changed by a test after adoption when the host changed since. No host is reached."""
    monkeypatch.setattr(import_probe, "probe_web_all",
                        lambda host: FakeReader.last.web_data if host.name == HAND_MADE_WEB else empty_web(host))


@pytest.fixture
def config(tmp_path):
    return Config(offices=default_offices(), state_dir=tmp_path,
                  hosting={"unmanaged": ["intranet.tarakankota.go.id"]})


def record_toolkit_site(store):
    """A site the toolkit built: everything of it on the hosts is explained by its record."""
    now = datetime.now(timezone.utc)
    with store.session() as session:
        session.add(RequestRow(id="HST-2024-0007", service="hosting", office="tarakan", fqdn=TOOLKIT.fqdn,
                               sha256="0" * 64, content=b"x", source="t", submitted_at=now, state="done",
                               decision="approve", current_step=None))
        session.flush()
        session.add(SiteRow(fqdn=TOOLKIT.fqdn, request_id="HST-2024-0007", office="tarakan", zone=ZONE,
                            label="simkes", state="provisioned", web_host="web1", db_host="db1", public_ip=SHARED,
                            dedicated_ip=False, config={"names": vars(TOOLKIT)}, plan_checksum=None,
                            created_at=now, provisioned_at=now, updated_at=now))


# -- the probe program ---------------------------------------------------------------


def _self_signed(path, name, days=30):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_the_web_probe_lists_every_vhost_block_pool_and_link(tmp_path):
    root = tmp_path / "host"
    available = root / "etc/apache2/sites-available"
    enabled = root / "etc/apache2/sites-enabled"
    pools = root / "etc/php/8.2/fpm/pool.d"
    for d in (available, enabled, pools, root / "var/www/simkeslama"):
        d.mkdir(parents=True)
    cert = _self_signed(root / "simkeslama.crt", OLD)
    (available / "simkes-lama.conf").write_text(f"""# made by hand in 2019
<VirtualHost {SHARED}:80>
    ServerName {OLD}
    ServerAlias www.{OLD} lama.{ZONE}
    DocumentRoot "{root}/var/www/simkeslama"
    ErrorLog ${{APACHE_LOG_DIR}}/simkeslama-error.log
    <FilesMatch "\\.php$">
        SetHandler "proxy:unix:/run/php/simkeslama.sock|fcgi://localhost"
    </FilesMatch>
</VirtualHost>
<VirtualHost {SHARED}:443>
    ServerName {OLD}
    DocumentRoot {root}/var/www/simkeslama
    SSLEngine on
    SSLCertificateFile {root}/simkeslama.crt
</VirtualHost>
""")
    (available / "disabled.conf").write_text("<VirtualHost *:80>\n  ServerName mati.tarakankota.go.id\n</VirtualHost>\n")
    os.symlink("../sites-available/simkes-lama.conf", enabled / "simkes-lama.conf")
    (pools / "simkeslama.conf").write_text("; pool\n[simkeslama]\nuser = simkeslama\nlisten = /run/php/simkeslama.sock\n")
    program = import_probe.WEB_PROBE.replace("__INPUT__", repr(json.dumps({"root": str(root)})))
    out = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, check=True)
    live = json.loads(out.stdout)
    files = {f["path"].rsplit("/", 1)[1]: f for f in live["files"]}
    assert set(files) == {"simkes-lama.conf", "disabled.conf"}
    lama = files["simkes-lama.conf"]
    assert lama["links"] == [{"path": str(enabled / "simkes-lama.conf"), "target": "../sites-available/simkes-lama.conf"}]
    assert lama["sha256"] == sha256((available / "simkes-lama.conf").read_text())
    http, https = lama["vhosts"]
    assert http["listen"] == [f"{SHARED}:80"] and https["listen"] == [f"{SHARED}:443"]
    assert http["server_name"] == OLD and http["aliases"] == ["www." + OLD, "lama." + ZONE]
    assert http["docroot"] == f"{root}/var/www/simkeslama" and http["docroot_stat"]["dir"]
    assert http["fpm_sockets"] == ["/run/php/simkeslama.sock"] and http["cert_file"] is None
    assert https["cert_file"] == f"{root}/simkeslama.crt"
    assert str(cert.not_valid_after_utc.year) in https["cert_not_after"]
    assert files["disabled.conf"]["links"] == []
    assert live["pools"] == [{"file": str(pools / "simkeslama.conf"), "php_version": "8.2", "name": "simkeslama",
                              "user": "simkeslama", "group": None, "listen": "/run/php/simkeslama.sock",
                              "sha256": sha256((pools / "simkeslama.conf").read_text())}]


# -- discovery -----------------------------------------------------------------------


def test_discovery_groups_what_no_record_explains_by_site(config, store):
    record_toolkit_site(store)
    found = importer.discover(config, store, reader=FakeReader())
    sites = {s["fqdn"]: s for s in found["sites"]}
    # The toolkit's own site, Debian's stock vhost and pool are not listed; the unmanaged name is set aside.
    assert set(sites) == {OLD, "lupa." + ZONE}
    lama = sites[OLD]
    (vhost,) = lama["vhosts"]
    assert vhost["file"] == f"{AVAILABLE}/simkes-lama.conf" and vhost["enabled"]
    assert vhost["docroot"] == "/var/www/simkeslama" and vhost["owner"] == "simkeslama"
    assert vhost["server_names"] == [OLD] and vhost["aliases"] == ["www." + OLD]
    (p,) = lama["pools"]
    assert p["name"] == "simkeslama" and "socket" in p["matched_by"]
    (db,) = lama["databases"]
    assert db["name"] == "db_simkeslama"
    assert [(a["user"], a["host"]) for a in db["accounts"]] == [("simkeslama_u", WEB_ADDR), ("simkeslama_u", "localhost")]
    assert lama["dns"] == [{"zone": ZONE, "name": OLD, "addresses": [SHARED], "ttl": 3600, "marked": False}]
    # An A record alone still makes a group; what resembles no site stays unassigned.
    assert sites["lupa." + ZONE]["vhosts"] == [] and sites["lupa." + ZONE]["dns"][0]["addresses"] == ["203.0.113.5"]
    assert [p["name"] for p in found["unassigned"]["pools"]] == ["aplikasi-lain"]
    assert [d["name"] for d in found["unassigned"]["databases"]] == ["arsip"]
    assert [a["user"] for a in found["unassigned"]["accounts"]] == ["backup"]
    ignored = {(i["kind"], i["name"]) for i in found["ignored"]}
    assert ignored == {("vhost", f"{AVAILABLE}/intranet.conf"), ("A record", "intranet." + ZONE)}
    # Nothing of the toolkit's own site shows anywhere.
    assert TOOLKIT.db_name not in json.dumps(found) and TOOLKIT.fqdn not in json.dumps(found)


def test_discovery_by_pool_owner_when_no_socket_matches(config, store):
    reader = FakeReader()
    reader.web_data["files"][0]["vhosts"][0]["fpm_sockets"] = []
    reader.web_data["pools"][0]["listen"] = "127.0.0.1:9005"
    found = importer.discover(config, store, reader=reader)
    lama = next(s for s in found["sites"] if s["fqdn"] == OLD)
    assert [p["name"] for p in lama["pools"]] == ["simkeslama"]
    assert "owns the document root" in lama["pools"][0]["matched_by"]


def test_discovery_limited_to_a_zone_and_a_host(config, store):
    reader = FakeReader()
    found = importer.discover(config, store, host="db1", reader=reader)
    assert reader.read == ["db1"] and found["hosts"] == {"web": [], "db": ["db1"]}
    assert [d["name"] for d in found["unassigned"]["databases"]] == ["arsip", "db_simkeslama",
                                                                      TOOLKIT.db_name]
    found = importer.discover(config, store, zone="bulelengkab.go.id", reader=FakeReader())
    assert found["sites"] == [] and found["zones"] == ["bulelengkab.go.id"]
    with pytest.raises(UserError, match="not a zone"):
        importer.discover(config, store, zone="example.org", reader=FakeReader())
    with pytest.raises(Exception, match="no host 'web9'"):
        importer.discover(config, store, host="web9", reader=FakeReader())


# -- adoption ------------------------------------------------------------------------


def test_adoption_without_apply_records_nothing(config, store):
    shown = importer.adopt(config, store, OLD, reader=FakeReader(), actor="budi")
    assert not shown["applied"] and shown["record"]["origin"] == "adopted"
    assert shown["record"]["names"]["user"] == "simkeslama"
    with store.session() as session:
        assert session.get(SiteRow, OLD) is None
        assert session.scalars(select(RequestRow)).all() == []
        assert session.scalars(select(Event)).all() == []


def adopt(config, store, **kw):
    return importer.adopt(config, store, OLD, reader=FakeReader(), actor="budi", apply=True, **kw)


def test_adoption_records_the_site_as_found_with_who_and_when(config, store):
    done = adopt(config, store)
    assert done["applied"] and done["request"]["id"].startswith("ADP-") and done["request"]["id"].endswith("-0001")
    with store.session() as session:
        row = session.get(SiteRow, OLD)
        request = session.get(RequestRow, row.request_id)
        events = session.scalars(select(Event).where(Event.request_id == row.request_id).order_by(Event.id)).all()
    assert (row.state, row.web_host, row.db_host, row.public_ip, row.label) == ("provisioned", "web1", "db1",
                                                                                 SHARED, "simkeslama")
    c = row.config
    assert c["origin"] == "adopted" and c["vhost_sha256"] == "a" * 64 and c["pool_sha256"] == "b" * 64
    assert c["names"] == {"fqdn": OLD, "slug": naming.site_slug("simkeslama", ZONE), "user": "simkeslama",
                          "home": "/var/www/simkeslama", "docroot": "/var/www/simkeslama",
                          "logdir": "/var/www/simkeslama", "pool": "simkeslama", "db_name": "db_simkeslama",
                          "db_user": "simkeslama_u"}
    found = c["found"]
    assert found["vhost_file"] == f"{AVAILABLE}/simkes-lama.conf" and found["links"][0]["path"] == \
        f"{ENABLED}/simkes-lama.conf"
    assert found["database"]["user_hosts"] == [WEB_ADDR, "localhost"] and len(found["database"]["grants"]) == 3
    assert found["dns"]["addresses"] == [SHARED] and not found["dns"]["marked"]
    assert c["adopted"]["by"] == "budi" and c["adopted"]["request"] == row.request_id
    # The SOP record: an adopted request with no approval and no step to run.
    assert (request.state, request.decision, request.current_step, request.service) == ("done", None, None, "hosting")
    assert b"Adopted site" in request.content
    assert [(e.kind, e.actor) for e in events] == [("request_adopted", "budi"), ("site_adopted", "budi")]
    assert events[1].payload["record"]["names"]["docroot"] == "/var/www/simkeslama"
    # Nothing provisions it: its request was never approved in the hosting SOP.
    with store.session() as session, pytest.raises(StateError, match="no approval"):
        check_hosting_approval(session, config, session.get(RequestRow, row.request_id))
    # Adopted once: a second adoption is refused, and discovery no longer lists it.
    with pytest.raises(Conflict, match="already recorded"):
        adopt(config, store)
    assert OLD not in [s["fqdn"] for s in importer.discover(config, store, reader=FakeReader())["sites"]]


def test_adoption_with_the_offices_request_file(config, store, tmp_path):
    text = (importer.__file__.rsplit("/provisioner/", 1)[0] + "/examples/tarakan-simkes.yaml")
    request = tmp_path / "lama.yaml"
    request.write_text(open(text).read().replace("HST-2024-0007", "HST-2019-0001").replace("subdomain: simkes",
                                                                                           "subdomain: simkeslama"))
    other = tmp_path / "other.yaml"
    other.write_text(open(text).read().replace("HST-2024-0007", "HST-2019-0002"))
    with pytest.raises(UserError, match="not hosting of"):
        importer.adopt(config, store, OLD, reader=FakeReader(), request_file=other)
    done = adopt(config, store, request_file=request)
    assert done["request"]["id"] == "HST-2019-0001"
    with store.session() as session:
        row = session.get(RequestRow, "HST-2019-0001")
        assert row.content == request.read_bytes() and row.decision is None


def test_adoption_refuses_what_it_cannot_take_whole(config, store):
    with pytest.raises(NotFound):
        importer.adopt(config, store, "intranet." + ZONE, reader=FakeReader())  # unmanaged
    with pytest.raises(StateError, match="no vhost"):
        importer.adopt(config, store, "lupa." + ZONE, reader=FakeReader())
    reader = FakeReader()
    reader.db_data["databases"].append("simkeslama_arsip")
    with pytest.raises(Conflict, match="2 databases"):
        importer.adopt(config, store, OLD, reader=reader)


# -- an adopted site afterwards --------------------------------------------------------


def test_an_adopted_site_is_desired_with_the_names_found(config, store):
    adopt(config, store)
    (site,) = Hosting(config, store).recorded_sites([OLD])
    assert site.adopted is not None and not site.dedicated_ip
    assert (site.names.user, site.names.docroot, site.names.pool, site.names.db_name, site.names.db_user) == (
        "simkeslama", "/var/www/simkeslama", "simkeslama", "db_simkeslama", "simkeslama_u")
    (item,) = web_target.probe_items([site])
    assert item["vhost_file"] == f"{AVAILABLE}/simkes-lama.conf"
    assert item["pool_file"] == "/etc/php/8.2/fpm/pool.d/simkeslama.conf"
    assert item["links"] == [f"{ENABLED}/simkes-lama.conf"]


def _observed(site, **web_changes):
    grants = [g for a in db_live()["accounts"] if a["user"] == "simkeslama_u" for g in a["grants"]]
    web = {"user": {"home": "/home/simkeslama", "shell": "/bin/bash"}, "sftp": False, "home": None,
           "docroot": {"owner": "simkeslama", "group": "simkeslama", "mode": "0755"}, "logdir": None,
           "vhost_sha256": "a" * 64, "vhost_enabled": True, "links_present": [f"{ENABLED}/simkes-lama.conf"],
           "server_names": [OLD], "document_roots": ["/var/www/simkeslama"], "pool_sha256": "b" * 64,
           "tls_cert": False, "suspend_sha256": None, "suspend_enabled": False} | web_changes
    live = Live(web={"web1": {"sites": {OLD: web}, "addresses": [WEB_ADDR, SHARED], "default_vhosts": {}}},
                db={"db1": {"databases": {"db_simkeslama": {"exists": True, "user_hosts": [WEB_ADDR, "localhost"],
                                                             "grants": grants}}}},
                dns=dns_live())
    return Observed(live=live, ns={OLD: {"ns1": {"addresses": [SHARED], "authoritative": True, "error": None}}},
                    nameservers=["ns1"])


def test_an_adopted_site_audits_clean_against_what_was_found(config, store):
    adopt(config, store)
    work = Hosting(config, store)
    sites, rows = audit.recorded(work, OLD)
    records = {f: r.config for f, r in rows.items()}
    # Unmarked A record, 0755 docroot, no SFTP, its own vhost: all as adopted, so no finding.
    assert compare(sites, records, _observed(sites[0]), [ZONE], extras=False) == []
    changed = compare(sites, records, _observed(sites[0], vhost_sha256="c" * 64, links_present=[]), [ZONE],
                      extras=False)
    assert sorted(f.kind for f in changed) == ["vhost-changed", "vhost-disabled"]
    observed = _observed(sites[0])
    observed.live.db["db1"]["databases"]["db_simkeslama"]["grants"].append(
        "GRANT ALL PRIVILEGES ON *.* TO `simkeslama_u`@`10.77.0.21`")
    (wider,) = compare(sites, records, observed, [ZONE], extras=False)
    assert (wider.kind, wider.severity) == ("grant-changed", "critical")


def test_the_audit_fix_leaves_an_adopted_site_to_normalization(config, store):
    adopt(config, store)
    work = Hosting(config, store)
    sites, rows = audit.recorded(work, OLD)
    observed = _observed(sites[0], vhost_sha256="c" * 64)
    findings = compare(sites, {f: r.config for f, r in rows.items()}, observed, [ZONE], extras=False)
    plan, refused = audit.fix_plan(work, sites, observed.live, rows, findings)
    assert plan.empty and "--normalize" in refused[OLD]


def test_the_unmanaged_list_keeps_names_out_of_the_audits_extra_records(config):
    zones = dns_live()
    found = audit.extra_records(zones, [ZONE], {ZONE: set()}, config.unmanaged_by_zone())
    names = {f.what for f in found}
    assert "A record intranet." + ZONE not in names and "A record lupa." + ZONE in names
    assert "A record intranet." + ZONE in {f.what for f in audit.extra_records(zones, [ZONE], {ZONE: set()})}


def test_the_unmanaged_list_is_read_from_the_configuration_and_per_office(tmp_path):
    path = tmp_path / "provisioner.yaml"
    path.write_text("hosting:\n  unmanaged: [Intranet.tarakankota.go.id.]\n"
                    "offices:\n  tarakan:\n    name: D\n    short_name: D\n    zones: [tarakankota.go.id]\n"
                    "    unmanaged: [arsip]\n")
    config = load_config(path)
    assert config.unmanaged() == {"intranet.tarakankota.go.id"}
    assert config.unmanaged("tarakan") == {"intranet.tarakankota.go.id", "arsip"}
    assert config.unmanaged_by_zone() == {ZONE: {"intranet.tarakankota.go.id", "arsip"}}


# -- suspension, removal, normalization -------------------------------------------------


def test_suspending_an_adopted_site_swaps_its_vhost_for_a_503_one(config, store):
    adopt(config, store)
    (site,) = Hosting(config, store).recorded_sites([OLD])
    suspended = site.__class__(**{**vars(site), "suspended": True})
    content = adopted_target.suspension_vhost(suspended)
    assert f"<VirtualHost {SHARED}:80>" in content and f"ServerName {OLD}" in content
    assert f"ServerAlias www.{OLD}" in content and "R=503" in content
    live = {"web1": {"sites": {OLD: _observed(site).live.web["web1"]["sites"][OLD]}}}
    plan = Plan(changes=adopted_target.plan([suspended], live), sites=[OLD])
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("Create", "suspension vhost", adopted_target.suspend_file(OLD)),
        ("Delete", "vhost link", f"{ENABLED}/simkes-lama.conf")]
    # Once suspended, unsuspending puts the office's link back and takes the 503 vhost away.
    live["web1"]["sites"][OLD] |= {"links_present": [], "suspend_sha256": sha256(content), "suspend_enabled": True}
    assert adopted_target.plan([suspended], live) == []
    back = [(c.action, c.kind, c.name, c.detail.get("points_to")) for c in adopted_target.plan([site], live)]
    assert back == [("Delete", "suspension vhost", adopted_target.suspend_file(OLD), None),
                    ("Create", "vhost link", f"{ENABLED}/simkes-lama.conf", "../sites-available/simkes-lama.conf")]
    items = adopted_target.items([suspended])
    assert items[0]["suspend_content"] == content and items[0]["links"][0]["target"] == \
        "../sites-available/simkes-lama.conf"


def test_a_vhost_file_shared_with_other_names_is_not_suspended(config, store):
    reader = FakeReader()
    reader.web_data["files"][0]["vhosts"].append(block("lain." + ZONE))
    importer.adopt(config, store, OLD, reader=reader, apply=True, actor="budi")
    (site,) = Hosting(config, store).recorded_sites([OLD])
    with pytest.raises(StateError, match="also serves lain"):
        adopted_target.suspension_vhost(site.__class__(**{**vars(site), "suspended": True}))


def test_the_lifecycle_suspends_an_adopted_site_through_the_swap(config, store, monkeypatch):
    adopt(config, store)
    observed = _observed(None)
    monkeypatch.setattr(web_target, "read", lambda inventory, sites: observed.live.web)
    planned = Lifecycle(config, store, actor="budi").plan("suspend", OLD)
    assert [c.kind for c in planned.plan.changes] == ["suspension vhost", "vhost link"]
    assert planned.checksum == planned.plan.checksum


def test_removing_an_adopted_site_takes_what_was_found(config, store, monkeypatch):
    adopt(config, store)
    observed = _observed(None)
    monkeypatch.setattr(Hosting, "read_live", lambda self, sites: observed.live)
    planned = Lifecycle(config, store, actor="budi").plan("remove", OLD)
    assert [(c.action, c.target, c.kind, c.name) for c in planned.plan.changes] == [
        ("Delete", "dns", "A record", OLD),
        ("Delete", "web", "vhost link", f"{ENABLED}/simkes-lama.conf"),
        ("Delete", "web", "vhost", f"{AVAILABLE}/simkes-lama.conf"),
        ("Delete", "web", "PHP-FPM pool", "/etc/php/8.2/fpm/pool.d/simkeslama.conf"),
        ("Delete", "web", "site directory", "/var/www/simkeslama"),
        ("Delete", "web", "system user", "simkeslama"),
        ("Delete", "db", "database user", f"simkeslama_u@{WEB_ADDR}, simkeslama_u@localhost"),
        ("Delete", "db", "database", "db_simkeslama")]
    assert [b["kind"] for b in planned.backups] == ["database", "files"] and planned.plan.notes == {}
    (site,) = Hosting(config, store).recorded_sites([OLD])
    (web,) = adopted_target.items([site], state="absent", plan=planned.plan)
    assert (web["vhost_file"], web["pool_file"], web["docroot"], web["user"], web["links"][0]["path"]) == (
        f"{AVAILABLE}/simkes-lama.conf", "/etc/php/8.2/fpm/pool.d/simkeslama.conf", "/var/www/simkeslama",
        "simkeslama", f"{ENABLED}/simkes-lama.conf")
    assert adopted_target.db_items([site], planned.plan) == [
        {"db_host": "db1", "name": "db_simkeslama", "user": "simkeslama_u", "hosts": [WEB_ADDR, "localhost"],
         "drop_database": True}]


def test_a_shared_document_root_or_owner_is_not_taken_with_the_site(config, store, monkeypatch):
    reader = FakeReader()
    # Another vhost serves a directory inside this site's document root, as the same owner.
    reader.web_data["files"].append(vhost_file("lain.conf", [block("lain." + ZONE, docroot="/var/www/simkeslama/lain")]))
    importer.adopt(config, store, OLD, reader=reader, apply=True, actor="budi")
    with store.session() as session:
        found = session.get(SiteRow, OLD).config["found"]
    assert found["docroot_shared_with"] == [f"{AVAILABLE}/lain.conf"] and not found["owner_dedicated"]
    monkeypatch.setattr(Hosting, "read_live", lambda self, sites: _observed(None).live)
    planned = Lifecycle(config, store).plan("remove", OLD)
    kinds = [(c.target, c.kind) for c in planned.plan.changes]
    assert ("web", "site directory") not in kinds and ("web", "system user") not in kinds
    assert ("web", "vhost") in kinds and f"{AVAILABLE}/lain.conf also use" in planned.plan.notes[OLD]


def test_normalization_is_a_reviewed_plan_to_the_toolkits_layout(config, store):
    with pytest.raises(StateError, match="adopt it first"):
        importer.normalize(config, store, OLD)
    adopt(config, store)
    plan = importer.normalize(config, store, OLD)
    derived = naming.site_names("simkeslama", ZONE)
    kinds = {(c.action, c.kind, c.name) for c in plan.changes}
    assert ("Create", "system user", derived.user) in kinds
    assert ("Create", "vhost", f"{AVAILABLE}/{OLD}.conf") in kinds
    assert ("Delete", "vhost", f"{AVAILABLE}/simkes-lama.conf") in kinds
    assert ("Delete", "PHP-FPM pool", "/etc/php/8.2/fpm/pool.d/simkeslama.conf") in kinds
    assert ("Create", "database", derived.db_name) in kinds
    dns = next(c for c in plan.changes if c.target == "dns")
    assert dns.detail["marker"] == "provisioner" and dns.detail["address"] == SHARED
    vhost = next(c for c in plan.changes if c.kind == "vhost" and c.action == "Create")
    assert f"DocumentRoot \"{derived.docroot}\"" in vhost.detail["content"]
    assert len(plan.checksum) == 64 and plan.checksum == importer.normalize(config, store, OLD).checksum
    assert "planned only" in plan.notes[OLD]


# -- the command ---------------------------------------------------------------------


def test_the_command_lists_adopts_and_plans(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from provisioner import records
    from provisioner.cli import main
    from provisioner.store import open_store

    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path))
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importer, "Reader", lambda work: FakeReader())

    def run(*args):
        result = CliRunner().invoke(main, list(args))
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    code, out = run("import")
    assert code == 0 and f"{OLD}  (office tarakan)" in out and "pool       web1:/etc/php/8.2/fpm/pool.d/simkeslama.conf" in out
    assert "database   db1:db_simkeslama (simkeslama_u@10.77.0.21" in out
    assert f"adopt: provision import --site {OLD} --apply" in out and "database db1:arsip" in out
    code, out = run("import", "--zone", ZONE, "--json")
    assert code == 0 and {s["fqdn"] for s in json.loads(out)["sites"]} >= {OLD}
    code, out = run("import", "--apply")
    assert code != 0 and "go with --site" in out
    code, out = run("import", "--site", OLD)
    assert code == 0 and "would be recorded" in out and "dry run" in out
    code, out = run("import", "--site", OLD, "--apply", "--by", "ani")
    assert code == 0 and "recorded as adopted by ani" in out
    code, out = run("import", "--site", OLD, "--normalize")
    assert code == 0 and "checksum" in out and "planned only" in out
    code, out = run("site", "show", OLD, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["record"]["docroot"] == "/var/www/simkeslama" and shown["record"]["state"] == "provisioned"
    assert [e["kind"] for e in shown["history"]] == ["request_adopted", "site_adopted"]
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    assert records.site_list(store)[0]["fqdn"] == OLD
    store.close()


def test_a_file_serving_two_sites_is_listed_under_each(config, store):
    reader = FakeReader()
    reader.web_data["files"][0]["vhosts"].append(block("lain." + ZONE, docroot="/var/www/lain", owner="lain"))
    sites = {s["fqdn"]: s for s in importer.discover(config, store, reader=reader)["sites"]}
    assert sites[OLD]["vhosts"][0]["shared_with"] == ["lain." + ZONE]
    assert sites["lain." + ZONE]["vhosts"][0]["shared_with"] == [OLD]
    assert sites["lain." + ZONE]["vhosts"][0]["docroot"] == "/var/www/lain"


def test_the_sop_engine_shows_an_adopted_request_and_runs_nothing_for_it(config, store):
    from provisioner.sop.engine import Engine

    done = adopt(config, store)
    engine = Engine(config, store)
    shown = engine.show(done["request"]["id"])
    assert shown["state"] == "done" and shown["decision"] is None
    assert engine._run_pending(done["request"]["id"]) == []
    assert done["request"]["id"] not in [o["request"] for o in engine.overdue()]


def test_an_adopted_sites_passwords_are_not_rotated_by_the_toolkit(config, store):
    from provisioner.hosting import rotate_credentials

    adopt(config, store)
    with pytest.raises(StateError, match="adopted site"):
        rotate_credentials(config, store, OLD)


@pytest.mark.parametrize("docroot", ["/var/www", "/srv", "/var/www/../etc", "/var/www/html"])
def test_a_document_root_every_site_lives_under_is_never_removed(config, store, docroot):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]  # no other vhost shares it: the rule alone
    reader.web_data["files"][0]["vhosts"][0]["docroot"] = docroot
    importer.adopt(config, store, OLD, reader=reader, apply=True, actor="budi")
    (site,) = Hosting(config, store).recorded_sites([OLD])
    with pytest.raises(StateError, match="not a directory the toolkit deletes"):
        adopted_target.removable(site)


# -- what a removal or an audit may do with an adopted site (review fixes) -----------------


def _site(config, store, reader):
    importer.adopt(config, store, OLD, reader=reader, apply=True, actor="budi")
    (site,) = Hosting(config, store).recorded_sites([OLD])
    return site


def _removal(config, store, monkeypatch, observed) -> Plan:
    monkeypatch.setattr(Hosting, "read_live", lambda self, sites: observed.live)
    return Lifecycle(config, store, actor="budi").plan("remove", OLD).plan


def _plan_kinds(config, store, monkeypatch, observed):
    return [(c.target, c.kind) for c in _removal(config, store, monkeypatch, observed).changes]


@pytest.mark.parametrize("change", [
    {"user": "simkes'lama"},  # a quote in the user name
    {"host": "10.77.0.%'; DROP USER root; --"},  # ... or in an account's host
])
def test_adoption_refuses_database_names_that_would_need_quoting(config, store, change):
    reader = FakeReader()
    for account in reader.db_data["accounts"]:
        if account["user"] == "simkeslama_u":
            account.update(change)
    with pytest.raises(StateError, match="cannot be recorded"):
        importer.adopt(config, store, OLD, reader=reader, apply=True, actor="budi")


FAKE_MYSQL = '''#!{python}
import json, os, sys
# One query with -e, or statements on stdin, one a line (as the audit's probe sends them).
queries = ([sys.argv[sys.argv.index("-e") + 1]] if "-e" in sys.argv
           else [line.rstrip("\\n")[:-1] for line in sys.stdin if line.strip()])
for query in queries:
    with open(os.environ["FAKE_MYSQL_LOG"], "a") as log:
        log.write(json.dumps(query) + "\\n")
    if query == "SHOW DATABASES":
        print("db_x")
    elif query.startswith("SELECT User, Host"):
        print(os.environ["FAKE_MYSQL_USER"] + "\\t" + os.environ["FAKE_MYSQL_HOST"])
    elif query.startswith("SELECT '"):
        print(query[len("SELECT '"):-1])
    elif query.startswith("SHOW GRANTS"):
        print("GRANT USAGE ON *.* TO `u`@`h`")
'''


@pytest.mark.parametrize("program", ["audit", "import"])
def test_the_database_probes_quote_names_they_put_into_sql(tmp_path, program):
    from provisioner.targets import probe

    user, host = "u'; DROP USER root; -- \\", "h'x"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mysql").write_text(FAKE_MYSQL.format(python=sys.executable))
    (bin_dir / "mysql").chmod(0o755)
    log = tmp_path / "queries"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_MYSQL_LOG=str(log), FAKE_MYSQL_USER=user,
               FAKE_MYSQL_HOST=host)
    source = probe.DB_PROBE if program == "audit" else import_probe.DB_PROBE
    data = {"databases": [{"name": "db_x", "user": user}]} if program == "audit" else {}
    script = source.replace("__INPUT__", repr(json.dumps(data)))
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, check=True, env=env)
    grants = [q for q in map(json.loads, log.read_text().splitlines()) if q.startswith("SHOW GRANTS")]
    # One statement, the quote doubled and the backslash escaped: MariaDB reads back exactly the names.
    assert grants == ["SHOW GRANTS FOR 'u''; DROP USER root; -- \\\\'@'h''x'"]
    if program == "audit":  # the grant comes back as the account's, the marker row dropped
        assert json.loads(out.stdout)["databases"]["db_x"]["grants"] == ["GRANT USAGE ON *.* TO `u`@`h`"]


@pytest.mark.parametrize("docroot", ["/usr/share/phpmyadmin", "/var/lib/roundcube/public_html", "/etc/ssl/private",
                                     "/home/admin", "/usr/bin", "/var/www/.", "/var/www//x", "/srv/www"])
def test_removal_deletes_a_document_root_only_where_sites_live(config, store, docroot):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]
    reader.web_data["files"][0]["vhosts"][0]["docroot"] = docroot
    site = _site(config, store, reader)
    with pytest.raises(StateError, match="not a directory the toolkit deletes"):
        adopted_target.removable(site)
    with pytest.raises(StateError):
        adopted_target.items([site], state="absent", plan=Plan(sites=[OLD]))


@pytest.mark.parametrize("docroot", ["/var/www/simkeslama", "/srv/www/simkeslama/public", "/home/lama/public_html"])
def test_a_document_root_below_the_web_roots_or_in_a_home_may_go(config, store, docroot):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]
    reader.web_data["files"][0]["vhosts"][0]["docroot"] = docroot
    adopted_target.removable(_site(config, store, reader))


def test_a_document_root_root_owns_is_kept(config, store, monkeypatch):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]
    reader.web_data["files"][0]["vhosts"][0]["docroot_stat"]["owner"] = "root"
    site = _site(config, store, reader)
    observed = _observed(None, docroot={"owner": "root", "group": "root", "mode": "0755"})
    plan = _removal(config, store, monkeypatch, observed)
    kinds = [(c.target, c.kind) for c in plan.changes]
    assert ("web", "site directory") not in kinds and ("web", "system user") not in kinds
    assert ("web", "vhost") in kinds
    (item,) = adopted_target.items([site], state="absent", plan=plan)
    assert item["docroot"] is None and item["user"] is None


def test_a_document_root_root_owns_since_adoption_is_kept_too(config, store, monkeypatch):
    _site(config, store, FakeReader())
    observed = _observed(None, docroot={"owner": "root", "group": "root", "mode": "0755"})
    assert ("web", "site directory") not in _plan_kinds(config, store, monkeypatch, observed)


def _run_assert(item, tmp_path):
    """The playbook's first task (its refusal of bad items) run locally on one item."""
    import yaml

    playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(playbook_bin):
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    plays = yaml.safe_load(open(importer.__file__.rsplit("/provisioner/", 1)[0] + "/playbooks/adopted_site.yml"))
    check = plays[0]["tasks"][0]
    assert check["ansible.builtin.assert"]
    (tmp_path / "hosts").write_text("[web]\nweb1 ansible_connection=local ansible_user=provisioner\n")
    (tmp_path / "check.yml").write_text(yaml.safe_dump([{"hosts": "web", "gather_facts": False,
                                                         "vars": {"adopted_site__here": [item]},
                                                         "tasks": [check]}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "home"))
    return subprocess.run([playbook_bin, "-i", str(tmp_path / "hosts"), str(tmp_path / "check.yml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path).returncode


@pytest.mark.parametrize("docroot, user, refused", [
    ("/var/www/simkeslama", "simkeslama", False), ("/var/www/.", None, True), ("/usr/share/phpmyadmin", None, True),
    ("/home/admin", None, True), ("/var/www/simkeslama", "provisioner", True)])
def test_the_playbook_refuses_the_same_document_roots_and_accounts(tmp_path, docroot, user, refused):
    item = {"fqdn": OLD, "web_host": "web1", "state": "absent", "suspended": False, "links": [],
            "suspend_file": adopted_target.suspend_file(OLD), "suspend_link": adopted_target.suspend_link(OLD),
            "vhost_file": f"{AVAILABLE}/simkes-lama.conf", "pool_file": None, "php_version": None,
            "docroot": docroot, "user": user}
    assert (_run_assert(item, tmp_path) != 0) == refused


@pytest.mark.parametrize("owner, account", [
    ("admin", None),  # an administrator: login shell, sudo, its home elsewhere
    # the account the toolkit logs in with (all else as a site's own)
    ("provisioner", {"uid": 1001, "home": "/var/www", "shell": "/usr/sbin/nologin", "groups": []}),
    ("simkeslama", {"uid": 1005, "home": "/var/www/simkeslama", "shell": "/bin/bash", "groups": []}),  # logs in
    ("simkeslama", {"uid": 1005, "home": "/home/simkeslama", "shell": "/usr/sbin/nologin", "groups": []}),
    ("simkeslama", {"uid": 1005, "home": "/var/www/simkeslama", "shell": "/usr/sbin/nologin", "groups": ["adm"]}),
    ("simkeslama", {"uid": 0, "home": "/var/www/simkeslama", "shell": "/usr/sbin/nologin", "groups": []}),
])
def test_the_owner_goes_with_the_site_only_if_it_is_the_sites_own_account(config, store, monkeypatch, owner,
                                                                           account):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]
    reader.web_data["files"][0]["vhosts"][0]["docroot_stat"]["owner"] = owner
    if account is not None:
        reader.web_data["users"][owner] = account
    reader.web_data["pools"][0]["user"] = owner
    site = _site(config, store, reader)
    assert not site.adopted["owner_dedicated"] and site.adopted["owner_kept_because"]
    observed = _observed(None, docroot={"owner": owner, "group": owner, "mode": "0755"})
    plan = _removal(config, store, monkeypatch, observed)
    assert ("web", "system user") not in [(c.target, c.kind) for c in plan.changes]
    (item,) = adopted_target.items([site], state="absent", plan=plan)
    assert item["user"] is None


def test_the_sites_own_account_goes_with_it(config, store):
    site = _site(config, store, FakeReader())
    assert site.adopted["owner_dedicated"] and site.adopted["owner_kept_because"] is None


def test_a_database_user_with_grants_beyond_the_sites_database_is_kept(config, store, monkeypatch):
    reader = FakeReader()
    wide = "GRANT SELECT ON *.* TO `simkeslama_u`@`localhost`"
    reader.db_data["accounts"][1]["grants"].append(wide)
    site = _site(config, store, reader)
    assert site.adopted["database"]["user_shared"] and site.adopted["database"]["user_other_grants"] == [wide]
    observed = _observed(None)
    observed.live.db["db1"]["databases"]["db_simkeslama"]["grants"].append(wide)
    plan = _removal(config, store, monkeypatch, observed)
    # Only the account that has the wide grant stays; the other host's account goes.
    (account,) = [c for c in plan.changes if c.kind == "database user"]
    assert account.detail["accounts"] == [["simkeslama_u", WEB_ADDR]]
    assert f"database user simkeslama_u@localhost (granted beyond db_simkeslama: {wide})" in plan.notes[OLD]
    assert adopted_target.db_items([site], plan) == [{"db_host": "db1", "name": "db_simkeslama",
                                                      "user": "simkeslama_u", "hosts": [WEB_ADDR],
                                                      "drop_database": True}]


def test_a_database_user_shared_since_adoption_is_kept_and_the_plan_says_why(config, store, monkeypatch):
    _site(config, store, FakeReader())
    observed = _observed(None)
    observed.live.db["db1"]["databases"]["db_simkeslama"]["grants"].append(
        "GRANT ALL PRIVILEGES ON `arsip`.* TO `simkeslama_u`@`10.77.0.21`")
    plan = _removal(config, store, monkeypatch, observed)
    (account,) = [c for c in plan.changes if c.kind == "database user"]
    assert account.detail["accounts"] == [["simkeslama_u", "localhost"]]
    assert f"simkeslama_u@{WEB_ADDR} (granted beyond db_simkeslama" in plan.notes[OLD]


@pytest.mark.parametrize("where", ["vhost_file", "link"])
def test_files_outside_apaches_directories_are_refused_before_any_step(config, store, monkeypatch, where):
    reader = FakeReader()
    reader.web_data["files"] = reader.web_data["files"][:1]
    if where == "vhost_file":  # a link in sites-enabled to a file elsewhere
        reader.web_data["files"][0]["path"] = "/opt/app/apache.conf"
    else:
        reader.web_data["files"][0]["links"][0]["path"] = "/etc/apache2/conf-enabled/simkes-lama.conf"
    site = _site(config, store, reader)
    monkeypatch.setattr(Hosting, "read_live", lambda self, sites: _observed(None).live)
    # The removal plan (made before DNS, the first step, runs) already refuses it.
    with pytest.raises(StateError, match="not a file of|not all in"):
        Hosting(config, store).removal_plan([site])
    with pytest.raises(StateError):
        Lifecycle(config, store, actor="budi").plan("remove", OLD)


def test_dns_removal_takes_only_the_a_record_as_it_was_found(config, store):
    from provisioner.targets import dns as dns_target

    site = _site(config, store, FakeReader())
    live = dns_live()
    assert [c.kind for c in dns_target.removal_changes([site], live)] == ["A record"]
    live[ZONE][(OLD + ".", "A")] = rrset(OLD + ".", [SHARED, "198.51.100.7"])
    with pytest.raises(Conflict, match="now points at"):
        dns_target.removal_changes([site], live)
    # The apply reads the zone again and leaves a record that changed since.
    target = object.__new__(dns_target.DnsTarget)
    patched = []
    target.read = lambda zones: live
    target._patch = lambda zone, rrsets: patched.append(rrsets)
    assert target.remove([site]) == {} and patched == []
    live[ZONE][(OLD + ".", "A")] = rrset(OLD + ".", [SHARED])
    target.remove([site])
    assert patched == [[{"name": OLD + ".", "type": "A", "changetype": "DELETE", "records": []}]]


def test_an_adopted_sites_certificate_findings_do_not_point_at_the_audit_fix(config, store):
    from test_audit import served_facts

    reader = FakeReader()
    reader.web_data["files"][0]["vhosts"][0].update(cert_file="/etc/ssl/certs/simkeslama.crt",
                                                    key_file="/etc/ssl/private/simkeslama.key")
    _site(config, store, reader)
    work = Hosting(config, store)
    sites, rows = audit.recorded(work, OLD)
    (site,) = sites
    assert site.tls and site.adopted["tls"]["cert_file"] == "/etc/ssl/certs/simkeslama.crt"
    observed = _observed(site, tls_cert=True)
    observed.served = {OLD: served_facts(OLD, days_left=-2.0)}
    findings = compare([site], {f: r.config for f, r in rows.items()}, observed, [ZONE], extras=False)
    (expired,) = [f for f in findings if f.kind == "tls-expired"]
    # The fix renews nothing for an adopted site (renewal_plan skips it): the line must not say it would.
    assert "--fix" not in expired.fix and "/etc/ssl/certs/simkeslama.crt" in expired.fix
    assert "--normalize" in expired.fix
    renewals, forced = audit.renewal_plan(work, OLD, findings, rows)
    assert renewals is None and forced == []


def test_the_listing_prints_no_control_characters_read_from_the_hosts(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from provisioner.cli import main

    monkeypatch.setenv("PROVISIONER_HOME", str(tmp_path))
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    reader = FakeReader()
    reader.web_data["files"][0]["path"] = f"{AVAILABLE}/simkes\x1b]0;owned\x07-lama.conf"
    reader.web_data["pools"][0]["name"] = "simkeslama\x1b[2J\r"
    reader.web_data["pools"][3]["user"] = "lain\u202e"
    monkeypatch.setattr(importer, "Reader", lambda work: reader)
    result = CliRunner().invoke(main, ["import"])
    assert result.exit_code == 0, result.output
    assert "simkes?]0;owned?-lama.conf" in result.output
    assert not [c for c in result.output if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) < 0xa0
                or c == "\u202e"]


def test_an_offices_unmanaged_list_sets_aside_only_that_offices_things(tmp_path, store):
    offices = default_offices()
    offices["buleleng"] = offices["buleleng"].model_copy(update={"unmanaged": [OLD, "db_simkeslama", "simkeslama"]})
    config = Config(offices=offices, state_dir=tmp_path)
    found = importer.discover(config, store, reader=FakeReader())
    lama = next(s for s in found["sites"] if s["fqdn"] == OLD)
    assert [d["name"] for d in lama["databases"]] == ["db_simkeslama"] and lama["pools"]
    assert found["ignored"] == []
    assert config.unmanaged() == set() and "db_simkeslama" in config.unmanaged("buleleng")
    extras = audit.extra_records(dns_live(), [ZONE], {ZONE: set()}, config.unmanaged_by_zone())
    assert f"A record {OLD}" in {f.what for f in extras}
    # The same list on the site's own office sets its database and pool aside, and the site whole.
    offices["tarakan"] = offices["tarakan"].model_copy(update={"unmanaged": ["db_simkeslama", "simkeslama"]})
    found = importer.discover(Config(offices=offices, state_dir=tmp_path), store, reader=FakeReader())
    lama = next(s for s in found["sites"] if s["fqdn"] == OLD)
    assert lama["databases"] == [] and lama["pools"] == []
    assert {(i["kind"], i["name"]) for i in found["ignored"]} == {("database", "db_simkeslama"), ("pool", "simkeslama")}
    offices["tarakan"] = offices["tarakan"].model_copy(update={"unmanaged": [OLD]})
    found = importer.discover(Config(offices=offices, state_dir=tmp_path), store, reader=FakeReader())
    assert OLD not in [s["fqdn"] for s in found["sites"]]


# -- what a removal, a suspension and their playbook may do (second review's fixes) -----------


def _playbook_tasks(names: list[str], extravars: dict, tmp_path, env: dict | None = None):
    """Some tasks of playbooks/adopted_site.yml's web play, run here (ansible_connection=local), by name."""
    import yaml

    playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(playbook_bin):
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    (web_play, _db_play) = yaml.safe_load(open(importer.__file__.rsplit("/provisioner/", 1)[0]
                                               + "/playbooks/adopted_site.yml"))
    tasks = [t for t in web_play["tasks"] if t["name"] in names]
    assert [t["name"] for t in tasks] == names
    (tmp_path / "hosts").write_text(f"[web]\nweb1 ansible_connection=local ansible_user=provisioner "
                                    f"ansible_python_interpreter={sys.executable}\n")
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{**web_play, "tasks": tasks}]))
    (tmp_path / "vars.json").write_text(json.dumps(extravars))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "home"), **(env or {}))
    return subprocess.run([playbook_bin, "-i", str(tmp_path / "hosts"), "-e", f"@{tmp_path / 'vars.json'}",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, cwd=tmp_path)


SWAP = ["Look at the links and stand-ins as they are before this run",
        "Swap the vhost links, test the configuration, and put everything back as it was if Apache refuses it",
        "Reload Apache once", "Remove the suspension vhosts no link enables any more, and the copies kept for a rescue"]

# Refuses (exit 1) a configuration in which an enabled file says BROKEN; logs every reload.
FAKE_APACHE2CTL = """#!/bin/sh
case "$1" in
  configtest) if grep -qs BROKEN "$FAKE_ENABLED"/*; then echo "Syntax error" >&2; exit 1; fi
              echo "Syntax OK" >&2; exit 0;;
  graceful) echo graceful >> "$FAKE_RELOADS"; exit 0;;
esac
exit 2
"""


@pytest.fixture
def apache_dirs(tmp_path):
    """sites-available and sites-enabled in a test directory, the office's vhost and a fake apache2ctl."""
    d = {"available": tmp_path / "sites-available", "enabled": tmp_path / "sites-enabled", "bin": tmp_path / "bin"}
    for path in d.values():
        path.mkdir()
    (d["bin"] / "apache2ctl").write_text(FAKE_APACHE2CTL)
    (d["bin"] / "apache2ctl").chmod(0o755)
    d["env"] = {"PATH": f"{d['bin']}:{os.environ['PATH']}", "FAKE_ENABLED": str(d["enabled"]),
                "FAKE_RELOADS": str(tmp_path / "reloads")}
    d["own"], d["own_link"] = d["available"] / "lama.conf", d["enabled"] / "lama.conf"
    d["stand_in"], d["stand_in_link"] = d["available"] / "stand-in.conf", d["enabled"] / "stand-in.conf"
    d["item"] = {"fqdn": OLD, "web_host": "web1", "state": "present", "suspended": False,
                 "links": [{"path": str(d["own_link"]), "target": "../sites-available/lama.conf"}],
                 "suspend_file": str(d["stand_in"]), "suspend_link": str(d["stand_in_link"])}
    d["configtest"] = lambda: subprocess.run(["apache2ctl", "configtest"], env=dict(os.environ, **d["env"]),
                                             capture_output=True).returncode
    return d


def test_a_refused_unsuspension_leaves_the_stand_in_and_takes_the_offices_vhost_out_again(tmp_path, apache_dirs):
    d = apache_dirs
    # Suspended: the stand-in is enabled; meanwhile the office's vhost became one Apache refuses.
    d["stand_in"].write_text("# stand-in 503\n")
    d["stand_in_link"].symlink_to(d["stand_in"])
    d["own"].write_text("BROKEN: a directive of a module not loaded\n")
    run = _playbook_tasks(SWAP, {"adopted_site__sites": [d["item"]]}, tmp_path, d["env"])
    assert run.returncode != 0 and "put back as they were before this run" in run.stdout, run.stdout
    # As before the run: the stand-in still answers, the refused vhost is not enabled, Apache accepts
    # the configuration (later runs on the host are not blocked), and nothing was reloaded.
    assert d["stand_in_link"].is_symlink() and os.readlink(d["stand_in_link"]) == str(d["stand_in"])
    assert d["stand_in"].read_text() == "# stand-in 503\n"
    assert not os.path.lexists(d["own_link"])
    assert d["configtest"]() == 0 and "configuration passes" in run.stdout.replace("\n", " ")
    assert not (tmp_path / "reloads").exists()


def test_a_refused_suspension_puts_the_offices_vhost_back_and_drops_the_stand_in(tmp_path, apache_dirs):
    d = apache_dirs
    d["own"].write_text("<VirtualHost>ok</VirtualHost>\n")
    d["own_link"].symlink_to("../sites-available/lama.conf")
    item = d["item"] | {"suspended": True, "suspend_content": "BROKEN stand-in\n"}
    run = _playbook_tasks(SWAP, {"adopted_site__sites": [item]}, tmp_path, d["env"])
    assert run.returncode != 0, run.stdout
    assert os.readlink(d["own_link"]) == "../sites-available/lama.conf"
    assert not os.path.lexists(d["stand_in_link"]) and not d["stand_in"].exists()
    assert d["configtest"]() == 0 and not (tmp_path / "reloads").exists()


def test_an_accepted_unsuspension_enables_the_offices_vhost_and_drops_the_stand_in(tmp_path, apache_dirs):
    d = apache_dirs
    d["stand_in"].write_text("# stand-in 503\n")
    d["stand_in_link"].symlink_to(d["stand_in"])
    d["own"].write_text("<VirtualHost>ok</VirtualHost>\n")
    run = _playbook_tasks(SWAP, {"adopted_site__sites": [d["item"]]}, tmp_path, d["env"])
    assert run.returncode == 0, run.stdout
    assert os.readlink(d["own_link"]) == "../sites-available/lama.conf"
    assert not os.path.lexists(d["stand_in_link"]) and not d["stand_in"].exists()
    assert (tmp_path / "reloads").read_text() == "graceful\n"


WAIT = "Wait until no process runs as the accounts to remove"


def test_the_playbook_waits_for_the_accounts_last_process_before_it_removes_the_account(tmp_path):
    import pwd
    import threading

    import yaml

    plays = yaml.safe_load(open(importer.__file__.rsplit("/provisioner/", 1)[0] + "/playbooks/adopted_site.yml"))
    names = [t["name"] for t in plays[0]["tasks"]]
    assert names.index(WAIT) == names.index("Remove the owner accounts that were the removed sites' own") - 1
    if os.geteuid() != 0:
        pytest.skip("starting a process as another account needs root")
    user = "nobody"
    pwd.getpwnam(user)
    if subprocess.run(["pgrep", "-u", user], capture_output=True).returncode == 0:
        pytest.skip(f"{user} runs processes on this machine already")
    item = {"fqdn": OLD, "web_host": "web1", "state": "absent", "user": user}
    # A worker still running as the account (PHP-FPM's after its reload) ends within the wait: it goes on.
    worker = subprocess.Popen(["sleep", "2"], user=user)
    threading.Thread(target=worker.wait, daemon=True).start()  # reaped as it ends (no zombie left to see)
    try:
        run = _playbook_tasks([WAIT], {"adopted_site__sites": [item], "adopted_site__user_wait": 15}, tmp_path)
        assert run.returncode == 0, run.stdout
        assert worker.poll() is not None  # it returned only once the worker had ended
    finally:
        worker.kill()
        worker.wait()
    # One that outlives the wait stops the run before the account is touched.
    worker = subprocess.Popen(["sleep", "60"], user=user)
    try:
        run = _playbook_tasks([WAIT], {"adopted_site__sites": [item], "adopted_site__user_wait": 2}, tmp_path)
        assert run.returncode != 0 and WAIT in run.stdout
    finally:
        worker.kill()
        worker.wait()


def _pool_user(reader, fqdn_file: str, docroot: str, sockets=("/run/php/simkeslama.sock",), owner="lain"):
    """Another vhost (file fqdn_file) of another owner, handing PHP to `sockets`."""
    reader.web_data["files"].append(vhost_file(fqdn_file, [block(fqdn_file.removesuffix(".conf"), docroot=docroot,
                                                                 owner=owner, sockets=sockets)]))


def test_a_pool_another_vhost_uses_is_recorded_and_kept_by_the_removal(config, store, monkeypatch):
    reader = FakeReader()
    # The unmanaged intranet vhost hands PHP to the site's pool too.
    intranet = reader.web_data["files"][3]
    intranet["vhosts"][0]["fpm_sockets"] = ["/run/php/simkeslama.sock"]
    site = _site(config, store, reader)
    assert site.adopted["pool"]["shared_with"] == [intranet["path"]]
    # The pool runs as the owner: the account serves the intranet too, so it is not the site's own.
    assert not site.adopted["owner_dedicated"] and "also serves" in site.adopted["owner_kept_because"]
    plan = _removal(config, store, monkeypatch, _observed(None))
    kinds = [(c.target, c.kind) for c in plan.changes]
    assert ("web", "PHP-FPM pool") not in kinds and ("web", "system user") not in kinds
    assert ("web", "vhost") in kinds and ("web", "site directory") in kinds
    assert f"PHP-FPM pool /etc/php/8.2/fpm/pool.d/simkeslama.conf ({intranet['path']} also hand PHP to it)" \
        in plan.notes[OLD]
    (item,) = adopted_target.items([site], state="absent", plan=plan)
    assert item["pool_file"] is None and item["vhost_file"] == f"{AVAILABLE}/simkes-lama.conf"


def test_a_pool_reached_over_tcp_counts_its_vhosts_too(tmp_path):
    root = tmp_path / "host"
    available = root / "etc/apache2/sites-available"
    available.mkdir(parents=True)
    (available / "a.conf").write_text(
        "<VirtualHost *:80>\n ServerName a.x\n ProxyPassMatch ^/(.*\\.php)$ fcgi://127.0.0.1:9001/var/www/a/$1\n"
        ' SetHandler "proxy:unix:/run/php/b.sock|fcgi://localhost:9000"\n</VirtualHost>\n')
    program = import_probe.WEB_PROBE.replace("__INPUT__", repr(json.dumps({"root": str(root)})))
    live = json.loads(subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True,
                                     check=True).stdout)
    (entry,) = live["files"]
    # The port after a unix socket names no TCP listener: only the socket counts there.
    assert entry["vhosts"][0]["fpm_sockets"] == ["127.0.0.1:9001", "/run/php/b.sock"]
    used = import_probe.uses(live)
    assert import_probe.listen_users(used, ["9001"]) == [entry["path"]]
    assert import_probe.listen_users(used, ["127.0.0.1:9001"]) == [entry["path"]]
    assert import_probe.listen_users(used, ["/run/php/b.sock"]) == [entry["path"]]
    assert import_probe.listen_users(used, ["9000"]) == [] and import_probe.listen_users(used, ["/run/php/c"]) == []


@pytest.mark.parametrize("docroot", ["/var/www/simkeslama/baru", "/var/www/simkeslama", "/var/www"])
def test_a_vhost_added_after_adoption_keeps_the_document_root_it_uses(config, store, monkeypatch, docroot):
    reader = FakeReader()
    site = _site(config, store, reader)
    assert site.adopted["docroot_shared_with"] == [] and site.adopted["owner_dedicated"]
    # Made after adoption (the record does not know it): a vhost inside, on or above the document root.
    _pool_user(reader, "baru.conf", docroot, sockets=())
    plan = _removal(config, store, monkeypatch, _observed(None))
    kinds = [(c.target, c.kind) for c in plan.changes]
    assert ("web", "site directory") not in kinds
    assert f"document root /var/www/simkeslama ({AVAILABLE}/baru.conf also use it" in plan.notes[OLD]
    # Its files stay, and so does their owner (a uid left to files must not be handed out again).
    assert ("web", "system user") not in kinds and "system user simkeslama" in plan.notes[OLD]
    (item,) = adopted_target.items([site], state="absent", plan=plan)
    assert item["docroot"] is None and item["user"] is None


def test_a_pool_socket_or_owner_used_since_adoption_keeps_them(config, store, monkeypatch):
    reader = FakeReader()
    _site(config, store, reader)
    _pool_user(reader, "baru.conf", "/var/www/baru", owner="simkeslama", sockets=("/run/php/simkeslama.sock",))
    plan = _removal(config, store, monkeypatch, _observed(None))
    kinds = [(c.target, c.kind) for c in plan.changes]
    assert ("web", "PHP-FPM pool") not in kinds and ("web", "system user") not in kinds
    assert ("web", "site directory") in kinds
    # The pool kept runs as the owner too.
    assert (f"system user simkeslama ({AVAILABLE}/baru.conf, /etc/php/8.2/fpm/pool.d/simkeslama.conf also use it)"
            in plan.notes[OLD])


def test_a_name_added_to_the_vhost_file_since_adoption_stops_removal_and_suspension(config, store, monkeypatch):
    reader = FakeReader()
    _site(config, store, reader)
    reader.web_data["files"][0]["vhosts"].append(block("lain." + ZONE))
    with pytest.raises(StateError, match=f"now also serves lain.{ZONE}"):
        _removal(config, store, monkeypatch, _observed(None))
    # The suspension's probe reads the file's ServerNames: the new one would go down with the site.
    observed = _observed(None, server_names=[OLD, f"Lain.{ZONE}:80"])
    monkeypatch.setattr(web_target, "read", lambda inventory, sites: observed.live.web)
    with pytest.raises(StateError, match=f"now also serves lain.{ZONE}"):
        Lifecycle(config, store, actor="budi").plan("suspend", OLD)


def test_an_unmanaged_account_granted_on_the_database_neither_blocks_adoption_nor_is_dropped(tmp_path, store,
                                                                                             monkeypatch):
    reader = FakeReader()
    reader.db_data["accounts"].append({"user": "backup", "host": "10.77.0.9", "databases": ["db_simkeslama"],
                                       "grants": ["GRANT SELECT ON `db_simkeslama`.* TO `backup`@`10.77.0.9`"]})
    config = Config(offices=default_offices(), state_dir=tmp_path, hosting={"unmanaged": ["intranet." + ZONE]})
    with pytest.raises(Conflict, match="2 users"):  # what an office without the list meets
        importer.adopt(config, store, OLD, reader=reader)
    config = Config(offices=default_offices(), state_dir=tmp_path,
                    hosting={"unmanaged": ["intranet." + ZONE, "Backup"]})
    found = importer.discover(config, store, reader=reader)
    (lama,) = [s for s in found["sites"] if s["fqdn"] == OLD]
    assert {a["user"] for a in lama["databases"][0]["accounts"]} == {"simkeslama_u"}
    assert [i for i in found["ignored"] if i["kind"] == "database user"] == [
        {"kind": "database user", "name": "backup", "host": "db1"}]
    assert "backup" not in [a["user"] for a in found["unassigned"]["accounts"]]
    site = _site(config, store, reader)
    assert site.names.db_user == "simkeslama_u" and "backup" not in json.dumps(site.adopted["database"])
    # An office's own list sets it aside as well, once the database is placed with that office's site.
    offices = default_offices()
    offices["tarakan"] = offices["tarakan"].model_copy(update={"unmanaged": ["backup"]})
    with store.session() as session:  # discovered afresh: the adoption above set aside
        session.delete(session.get(SiteRow, OLD))
    found = importer.discover(Config(offices=offices, state_dir=tmp_path), store, reader=FakeReaderWith(reader))
    (lama,) = [s for s in found["sites"] if s["fqdn"] == OLD]
    assert [a["user"] for a in lama["databases"][0]["accounts"]] == ["simkeslama_u", "simkeslama_u"]
    assert {"kind": "database user", "name": "backup", "host": "db1"} in found["ignored"]


class FakeReaderWith(FakeReader):
    """Another reader of the same hosts (FakeReader.last stays the one given)."""

    def __init__(self, reader):
        self.web_data, self.db_data, self.dns_data, self.read = reader.web_data, reader.db_data, reader.dns_data, []


def test_a_database_account_put_on_the_unmanaged_list_after_adoption_is_never_dropped(tmp_path, store, monkeypatch):
    config = Config(offices=default_offices(), state_dir=tmp_path, hosting={"unmanaged": ["intranet." + ZONE]})
    _site(config, store, FakeReader())
    config = Config(offices=default_offices(), state_dir=tmp_path,
                    hosting={"unmanaged": ["intranet." + ZONE, "simkeslama_u"]})
    plan = _removal(config, store, monkeypatch, _observed(None))
    assert ("db", "database user") not in [(c.target, c.kind) for c in plan.changes]
    assert "database user simkeslama_u (on the unmanaged list)" in plan.notes[OLD]
    (site,) = Hosting(config, store).recorded_sites([OLD])
    assert adopted_target.db_items([site], plan) == [{"db_host": "db1", "name": "db_simkeslama",
                                                      "user": "simkeslama_u", "hosts": [], "drop_database": True}]


def test_a_removal_drops_the_accounts_its_plan_shows_and_its_read_back_finishes(config, store, monkeypatch):
    """An account host added after adoption is planned, dropped and read back as gone: the removal ends."""
    from provisioner import hosting as hosting_module
    from provisioner.targets import dns as dns_target

    reader = FakeReader()
    _site(config, store, reader)
    observed = _observed(None)
    db = observed.live.db["db1"]["databases"]["db_simkeslama"]
    db["user_hosts"].append("10.77.0.%")
    db["grants"].append("GRANT SELECT ON `db_simkeslama`.* TO `simkeslama_u`@`10.77.0.%`")
    web = observed.live.web["web1"]["sites"][OLD]
    runs = []

    def playbook(name, inventory_path, hosts, extravars, **_kw):
        """What adopted_site.yml does to the hosts, on the fake live state: exactly its items."""
        runs.append(extravars)
        for item in extravars["adopted_site__sites"]:
            web["links_present"] = []
            web["vhost_sha256"] = None if item["vhost_file"] else web["vhost_sha256"]
            web["pool_sha256"] = None if item["pool_file"] else web["pool_sha256"]
            web["docroot"] = None if item["docroot"] else web["docroot"]
            web["user"] = None if item["user"] else web["user"]
            reader.web_data["files"] = [f for f in reader.web_data["files"] if f["path"] != item["vhost_file"]]
        for item in extravars["adopted_site__databases"]:
            db["grants"] = [g for g in db["grants"] if not any(f"`@`{h}`" in g for h in item["hosts"])]
            db["user_hosts"] = [h for h in db["user_hosts"] if h not in item["hosts"]]
            db["exists"] = db["exists"] and not item.get("drop_database", True)

    monkeypatch.setattr(Hosting, "read_live", lambda self, sites: observed.live)
    monkeypatch.setattr(adopted_target.runner, "run_playbook", playbook)
    monkeypatch.setattr(dns_target.DnsTarget, "remove",
                        lambda self, sites: observed.live.dns[ZONE].pop((OLD + ".", "A")) and {})
    monkeypatch.setattr(hosting_module.verify, "dns_gone", lambda inventory, site: {"ns1": "no A record"})
    checks = Hosting(config, store).remove([OLD], actor="budi")
    (db_run,) = [r for r in runs if r["adopted_site__databases"]]
    assert db_run["adopted_site__databases"][0]["hosts"] == [WEB_ADDR, "localhost", "10.77.0.%"]
    assert checks[OLD]["hosts"] == "nothing left" and db["user_hosts"] == []
    with store.session() as session:
        assert session.get(SiteRow, OLD).state == "removed"


def test_an_account_host_added_since_adoption_that_needs_quoting_is_kept(config, store, monkeypatch):
    _site(config, store, FakeReader())
    observed = _observed(None)
    observed.live.db["db1"]["databases"]["db_simkeslama"]["user_hosts"].append("h'x")
    plan = _removal(config, store, monkeypatch, observed)
    (account,) = [c for c in plan.changes if c.kind == "database user"]
    assert account.detail["accounts"] == [["simkeslama_u", WEB_ADDR], ["simkeslama_u", "localhost"]]
    assert "database user simkeslama_u@\"h'x\" (a host that needs quoting" in plan.notes[OLD]
