"""Placement without hosts: a fake inventory of two web and two database hosts and a real store."""

from types import SimpleNamespace

import pytest

from provisioner import ipam
from provisioner.errors import Conflict
from provisioner.inventory import load_inventory
from provisioner.placement import Placement
from provisioner.sop.sla import utcnow
from provisioner.store import open_store
from provisioner.store.models import RequestRow, SiteRow

ZONE = "tarakankota.go.id"
HOSTS = """
all:
  children:
    nameservers:
      hosts:
        ns1: {ansible_host: 127.0.0.1, pdns_role: primary}
    web:
      hosts:
        web1: {ansible_host: 127.0.0.1, public_ip: 192.0.2.10, public_ip_pool: 192.0.2.128-192.0.2.129}
        web2: {ansible_host: 127.0.0.1, public_ip: 192.0.2.11, public_ip_pool: 192.0.2.192-192.0.2.193}
    db:
      hosts:
        db1: {ansible_host: 127.0.0.1}
        db2: {ansible_host: 127.0.0.1}
"""


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.close()


@pytest.fixture
def inventory(tmp_path):
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text(HOSTS)
    return load_inventory(tmp_path / "inv")


def request(number: int, label: str, database: bool = True):
    return SimpleNamespace(id=f"HST-2026-{number:04d}",
                           site=SimpleNamespace(fqdn=f"{label}.{ZONE}", database=database))


def submitted(store, r) -> None:
    with store.session() as session:
        session.add(RequestRow(id=r.id, service="hosting", office="tarakan", fqdn=r.site.fqdn, sha256="0" * 64,
                               content=b"", source="test", submitted_at=utcnow(), state="approved",
                               decision="approve", current_step=None))


def recorded(store, r, web: str, db: str | None, state: str = "provisioned", disk: int | None = None,
             db_bytes: int | None = None) -> None:
    submitted(store, r)
    now = utcnow()
    with store.session() as session:
        session.add(SiteRow(fqdn=r.site.fqdn, request_id=r.id, office="tarakan", zone=ZONE,
                            label=r.site.fqdn.split(".")[0], state=state, web_host=web, db_host=db, public_ip=None,
                            dedicated_ip=False, config={}, plan_checksum=None, created_at=now,
                            provisioned_at=now, updated_at=now, disk_bytes=disk, db_bytes=db_bytes))


def names(placed) -> tuple[str, str | None]:
    web, db = placed
    return web.name, db.name if db else None


def test_a_batch_of_four_spreads_two_and_two_counting_the_sites_it_placed(store, inventory):
    placement = Placement(store, inventory)
    batch = [request(i, f"s{i}") for i in range(1, 5)]
    placed = [names(placement.hosts(r)) for r in batch]
    assert placed == [("web1", "db1"), ("web2", "db2"), ("web1", "db1"), ("web2", "db2")]
    # Asking again (the apply asks for the pool locks, then for the sites) changes nothing.
    assert [names(placement.hosts(r)) for r in batch] == placed
    assert {h: x.sites for h, x in placement.load("web").items()} == {"web1": 2, "web2": 2}
    assert {h: x.sites for h, x in placement.load("db").items()} == {"db1": 2, "db2": 2}


def test_recorded_sites_count_and_a_site_without_a_database_takes_no_database_host(store, inventory):
    recorded(store, request(90, "lama1"), "web1", "db1")
    recorded(store, request(91, "lama2"), "web1", "db2")
    recorded(store, request(92, "hapus"), "web2", "db2", state="removed")  # a removed site weighs nothing
    placement = Placement(store, inventory)
    first, second = request(1, "baru1", database=False), request(2, "baru2")
    assert names(placement.hosts(first)) == ("web2", None)
    # web2 now has one placed in this batch, web1 two recorded: web2 again; the databases tie, by name.
    assert names(placement.hosts(second)) == ("web2", "db1")


def test_a_recorded_site_keeps_its_hosts_and_another_requests_name_is_refused(store, inventory):
    kept = request(5, "tetap")
    recorded(store, kept, "web2", "db2")
    for i in range(3):
        recorded(store, request(80 + i, f"isi{i}"), "web2", "db2")
    placement = Placement(store, inventory)
    assert names(placement.hosts(kept)) == ("web2", "db2")
    with pytest.raises(Conflict, match="already belongs to request HST-2026-0005"):
        placement.hosts(SimpleNamespace(id="HST-2026-0006", site=kept.site))


def test_a_site_holding_a_dedicated_address_stays_on_the_web_host_of_that_address(store, inventory):
    for i in range(3):
        recorded(store, request(70 + i, f"penuh{i}"), "web2", "db1")
    held = request(7, "alamat")
    submitted(store, held)
    address = ipam.allocate(store, inventory, inventory.host("web2"), held.site.fqdn, held.id)
    assert address == "192.0.2.192"  # web2's own pool, not web1's
    placement = Placement(store, inventory)
    assert names(placement.hosts(held))[0] == "web2"  # though web1 is empty
    assert names(placement.hosts(request(8, "lain")))[0] == "web1"


def test_a_run_over_two_web_and_two_database_hosts_gives_each_host_only_its_own(monkeypatch):
    from provisioner import naming
    from provisioner.site import DesiredSite
    from provisioner.targets import db as db_target
    from provisioner.targets import ip as ip_target
    from provisioner.targets import web as web_target

    def site(label, web, db, address):
        return DesiredSite(request_id=f"HST-{label}", office="tarakan", label=label, zone=ZONE,
                           names=naming.site_names(label, ZONE), web_host=web, web_address="10.77.0.21", db_host=db,
                           public_ip=address, dedicated_ip=True, php=True, php_version="8.2", database=True,
                           tls=False, quota_mb=1024, bandwidth_kbps=0)

    one, two = site("satu", "web1", "db1", "192.0.2.128"), site("dua", "web2", "db2", "192.0.2.192")
    runs = []
    for target in (web_target, db_target, ip_target):
        monkeypatch.setattr(target.runner, "run_playbook",
                            lambda playbook, inventory, hosts, **kw: runs.append((playbook, hosts, kw)))
    web_target.apply("inv", [one, two], {})
    db_target.apply("inv", [one, two], {})
    ip_target.apply("inv", [one, two])
    given = {playbook: (hosts, kw["extravars"]) for playbook, hosts, kw in runs}
    hosts, extravars = given["web_site.yml"]
    assert hosts == {"web1", "web2"}
    assert {h: [i["fqdn"] for i in items] for h, items in extravars["web_site__sites_by_host"].items()} == {
        "web1": [one.fqdn], "web2": [two.fqdn]}
    assert {h: [i["name"] for i in items] for h, items in
            given["db_site.yml"][1]["mariadb_site__databases_by_host"].items()} == {
        "db1": [one.names.db_name], "db2": [two.names.db_name]}
    assert given["public_ip.yml"][1]["public_ip__addresses_by_host"] == {
        "web1": [{"address": "192.0.2.128", "prefix": 32, "state": "present"}],
        "web2": [{"address": "192.0.2.192", "prefix": 32, "state": "present"}]}


GB = 1024 ** 3


def test_disk_counts_a_host_with_fewer_but_bigger_sites_is_the_more_loaded(store, inventory):
    # web1: one site of 10 GB; web2: two sites of 0.5 GB. By count web1 is emptier; by
    # load (1/3 of the sites + 10/11 of the disk against 2/3 + 1/11) it is not.
    recorded(store, request(1, "besar"), "web1", "db1", disk=10 * GB, db_bytes=GB)
    recorded(store, request(2, "kecil"), "web2", "db2", disk=GB // 2, db_bytes=8 * GB)
    recorded(store, request(3, "kecil2"), "web2", "db2", disk=GB // 2, db_bytes=8 * GB)
    placement = Placement(store, inventory)
    assert placement.load("web")["web1"].bytes == 10 * GB and placement.load("web")["web2"].bytes == GB
    # db2 holds two thirds of the sites and 16 of the 17 GB of databases: db1 gets the new one.
    assert names(placement.hosts(request(4, "baru"))) == ("web2", "db1")
    # A second new site: web2 now has 3/4 of the sites and 1/11 of the disk (0.84) against
    # web1's 1/4 + 10/11 (1.16): web2 again.
    assert names(placement.hosts(request(5, "baru2")))[0] == "web2"


def test_sites_never_measured_weigh_only_as_sites(store, inventory):
    recorded(store, request(1, "satu"), "web1", None)
    recorded(store, request(2, "dua"), "web1", None)
    recorded(store, request(3, "tiga"), "web2", None, disk=0)
    placement = Placement(store, inventory)
    assert names(placement.hosts(request(4, "baru"))) == ("web2", "db1")


def test_removed_sites_weigh_nothing(store, inventory):
    recorded(store, request(1, "lama"), "web1", "db1", state="removed", disk=50 * GB, db_bytes=50 * GB)
    recorded(store, request(2, "ada"), "web2", "db2")
    placement = Placement(store, inventory)
    assert names(placement.hosts(request(3, "baru"))) == ("web1", "db1")
