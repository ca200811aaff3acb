"""Hosting's pieces without hosts: names, plans, checksums, IPs, locks, secrets, certificates."""

import os
import re
import stat
import threading
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509

from provisioner import ipam, locks, naming, tls
from provisioner.changes import Create, Delete, Update
from provisioner.errors import ConfigError, StateError
from provisioner.inventory import load_inventory
from provisioner.plan import REMOVAL_ORDER, Plan
from provisioner.secretbox import SecretBox, new_password
from provisioner.store.models import Event, IPAllocation

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")


@pytest.mark.parametrize("label", ["simkes", "a", "9lives", "e-office", "x" * 63, "a-b-c-d-e-f-g-h"])
@pytest.mark.parametrize("zone", ["tarakankota.go.id", "bulelengkab.go.id"])
def test_derived_names_are_safe_for_hosts_and_mariadb(label, zone):
    names = naming.site_names(label, zone)
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,31}", names.user)
    # No '_' or '%': both are wildcards in a MariaDB GRANT.
    assert DB_NAME.fullmatch(names.db_name) and DB_NAME.fullmatch(names.db_user)
    assert names.docroot == f"/srv/www/{label}.{zone}/public"
    assert names.logdir.startswith("/var/log/apache2/sites/")


def test_the_same_label_in_two_zones_gets_two_sets_of_names():
    a = naming.site_names("simkes", "tarakankota.go.id")
    b = naming.site_names("simkes", "bulelengkab.go.id")
    assert a.user != b.user and a.db_name != b.db_name and a.home != b.home


def test_names_refuse_an_invalid_label():
    with pytest.raises(ValueError):
        naming.site_names("bad_label", "tarakankota.go.id")


def test_plan_orders_changes_and_its_checksum_covers_every_detail():
    changes = [
        Create("dns", "z", "a.z", "A record", "a.z", address="203.0.113.10"),
        Create("web", "web1", "a.z", "vhost", "/etc/apache2/sites-available/a.z.conf", content="one"),
        Create("db", "db1", "a.z", "database", "adb"),
        Create("ip", "web1", "a.z", "public IP", "203.0.113.100"),
    ]
    plan = Plan(changes=list(changes), sites=["a.z"])
    assert [c.target for c in plan.changes] == ["ip", "db", "web", "dns"]
    assert plan.targets_of("a.z") == ["ip", "db", "web", "dns"]
    same = Plan(changes=list(reversed(changes)), sites=["a.z"])
    assert same.checksum == plan.checksum
    edited = [c if c.kind != "vhost" else Create("web", "web1", "a.z", "vhost", c.name, content="two") for c in changes]
    assert Plan(changes=edited, sites=["a.z"]).checksum != plan.checksum
    text = plan.render()
    assert "4 to create, 0 to update, 0 to delete" in text and "| one" in text and plan.checksum in text


def test_removal_plans_run_the_other_way():
    plan = Plan(changes=[Delete("ip", "w", "a.z", "public IP", "x"), Delete("dns", "z", "a.z", "A record", "a.z"),
                         Delete("web", "w", "a.z", "vhost", "v")], sites=["a.z"], order=REMOVAL_ORDER)
    assert [c.target for c in plan.changes] == ["dns", "web", "ip"]


def test_an_empty_plan_says_so():
    plan = Plan(changes=[], sites=["a.z"])
    assert plan.empty and "already matches" in plan.render()
    assert Update("web", "w", "a.z", "vhost", "v").action == "Update"


def test_inventory_gives_groups_pool_and_api():
    inventory = load_inventory(ROOT / "inventory/lab")
    assert [h.name for h in inventory.group("web")] == ["web1", "web2"]
    assert inventory.primary_nameserver().name == "ns1"
    url, key_file = inventory.pdns_api()
    assert url.startswith("http://10.77.0.11:8081") and key_file.name == "pdns-api-key"
    pool = inventory.public_pool(inventory.host("web1"))
    assert pool[0] == ip_address("203.0.113.128") and len(pool) == 64
    # Each web host has its own pool: an address lives on one server only.
    assert not set(pool) & set(inventory.public_pool(inventory.host("web2")))
    assert inventory.host("web1").known_hosts == "/var/lib/provisioner-lab/known_hosts"


def test_dedicated_addresses_are_unique_stable_and_released(store):
    inventory = load_inventory(ROOT / "inventory/lab")
    web = inventory.host("web1")
    first = ipam.allocate(store, inventory, web, "a.tarakankota.go.id", "HST-2024-0001")
    second = ipam.allocate(store, inventory, web, "b.tarakankota.go.id", "HST-2024-0002")
    assert first == "203.0.113.128" and second == "203.0.113.129"
    assert ipam.allocate(store, inventory, web, "a.tarakankota.go.id", "HST-2024-0001") == first
    assert ipam.release(store, "a.tarakankota.go.id", "HST-2024-0001") == first
    assert ipam.allocate(store, inventory, web, "c.tarakankota.go.id", "HST-2024-0003") == first
    with store.session() as session:
        kinds = [e.kind for e in session.query(Event)]
        assert kinds.count("ip_allocated") == 3 and kinds.count("ip_released") == 1
        assert session.query(IPAllocation).count() == 2


def test_concurrent_allocations_never_share_an_address(store, tmp_path):
    inventory = load_inventory(ROOT / "inventory/lab")
    web = inventory.host("web1")
    got, errors = [], []

    def take(i):
        try:
            got.append(ipam.allocate(store, inventory, web, f"s{i}.tarakankota.go.id", f"HST-2024-{i:04d}"))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 12 and len(set(got)) == 12


def test_the_pool_runs_out_with_a_clear_error(store, tmp_path):
    hosts = (ROOT / "inventory/lab/hosts.yml").read_text().replace(
        "203.0.113.128-203.0.113.191", "203.0.113.128-203.0.113.129")
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv/hosts.yml").write_text(hosts)
    inventory = load_inventory(tmp_path / "inv")
    web = inventory.host("web1")
    for i in range(2):
        ipam.allocate(store, inventory, web, f"s{i}.z", "HST-2024-0001")
    with pytest.raises(StateError, match="exhausted"):
        ipam.allocate(store, inventory, web, "s9.z", "HST-2024-0001")


def test_a_lock_held_by_a_live_process_is_refused_and_a_dead_ones_taken_over(store):
    from provisioner.store.models import Lock
    from provisioner.sop.sla import utcnow

    with store.session() as session:
        session.add(Lock(name="site:a.z", holder="elsewhere:1", acquired_at=utcnow()))
    with pytest.raises(StateError, match="another apply is running"):
        with locks.held(store, ["site:a.z"]):
            pass
    import socket

    dead = f"{socket.gethostname()}:{2**22 + 12345}"  # above pid_max defaults: never alive
    with store.session() as session:
        session.get(Lock, "site:a.z").holder = dead
    with locks.held(store, ["site:a.z"]):
        with store.session() as session:
            assert session.get(Lock, "site:a.z").holder.startswith(locks.me() + ":")
    with store.session() as session:
        assert session.get(Lock, "site:a.z") is None


def test_secretbox_keeps_its_key_private_and_narrows_a_shared_one(tmp_path):
    box = SecretBox(tmp_path / "k" / "secret.key")
    assert stat.S_IMODE((tmp_path / "k/secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    token = box.seal("hunter2-password")
    assert "hunter2" not in token and box.open(token) == "hunter2-password"
    os.chmod(tmp_path / "k/secret.key", 0o644)
    assert SecretBox(tmp_path / "k" / "secret.key").open(token) == "hunter2-password"
    assert stat.S_IMODE((tmp_path / "k/secret.key").stat().st_mode) == 0o600
    other = tmp_path / "other.key"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        SecretBox(other).open(token)


def test_passwords_are_long_and_plain():
    passwords = {new_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 24 and p.isalnum() and p.isascii() for p in passwords)


def test_lab_ca_issues_a_certificate_for_the_name(tmp_path):
    ca = tls.ensure_lab_ca(tmp_path / "ca")
    assert stat.S_IMODE((tmp_path / "ca/ca.key").stat().st_mode) == 0o600
    bundle = tls.issue("lab-ca", tmp_path / "ca", "simkes.tarakankota.go.id")
    cert = x509.load_pem_x509_certificate(bundle.cert.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["simkes.tarakankota.go.id"]
    assert cert.issuer == x509.load_pem_x509_certificate(ca.read_bytes()).subject
    assert "PRIVATE KEY" in bundle.key
    assert tls.ensure_lab_ca(tmp_path / "ca") == ca  # made once


def test_certificates_from_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        tls.issue("files", tmp_path, "x.tarakankota.go.id")


def test_an_address_already_up_on_the_host_is_never_handed_out(store):
    inventory = load_inventory(ROOT / "inventory/lab")
    web = inventory.host("web1")
    got = ipam.allocate(store, inventory, web, "a.z", "HST-2024-0001", in_use={"203.0.113.128", "203.0.113.129"})
    assert got == "203.0.113.130"
