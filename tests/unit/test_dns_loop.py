"""The one DNS loop (verify.ask_every_ns) and its three users, over a fake resolver."""

from types import SimpleNamespace

import pytest

from provisioner import audit, verify
from provisioner.errors import HostError
from provisioner.inventory import Host, Inventory

SITE = SimpleNamespace(fqdn="simkes.tarakankota.go.id", public_ip="203.0.113.130")


@pytest.fixture
def inventory(tmp_path):
    hosts = {"ns1": Host("ns1", ("nameservers",), {"ansible_host": "127.0.0.1", "pdns_role": "primary"}),
             "ns2": Host("ns2", ("nameservers",), {"ansible_host": "127.0.0.2", "pdns_role": "secondary"})}
    return Inventory(path=tmp_path, hosts=hosts)


class Resolver:
    """Stands in for verify.ask: each server answers from its script, its last answer repeated."""

    def __init__(self, **scripts):
        self.scripts = {server: list(answers) for server, answers in scripts.items()}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, server, fqdn, timeout=2.0):
        self.asked.append((server, fqdn))
        script = self.scripts[server]
        return script.pop(0) if len(script) > 1 else script[0]


LOST = verify.Answer([], False, "no answer (Timeout)")
OURS = verify.Answer([SITE.public_ip], True)
NONE = verify.Answer([], True)


@pytest.fixture
def resolver(monkeypatch):
    def install(**scripts):
        fake = Resolver(**{("127.0.0.1" if k == "ns1" else "127.0.0.2"): v for k, v in scripts.items()})
        monkeypatch.setattr(verify, "ask", fake)
        monkeypatch.setattr(verify.time, "sleep", lambda seconds: None)
        return fake
    return install


def test_each_server_is_asked_until_it_answers_what_is_wanted(inventory, resolver):
    fake = resolver(ns1=[LOST, OURS], ns2=[NONE, NONE, OURS])
    seen = verify.ask_every_ns(inventory, SITE.fqdn, until=lambda a: a == OURS, wait=30)
    assert {name: (answer, met) for name, (_ns, answer, met) in seen.items()} == {
        "ns1": (OURS, True), "ns2": (OURS, True)}
    assert [server for server, _ in fake.asked] == ["127.0.0.1"] * 2 + ["127.0.0.2"] * 3


def test_without_waiting_a_lost_packet_is_asked_once_more_and_then_reported(inventory, resolver):
    fake = resolver(ns1=[LOST, OURS], ns2=[LOST])
    seen = verify.ask_every_ns(inventory, SITE.fqdn, tries=2)
    assert seen["ns1"][1:] == (OURS, True) and seen["ns2"][1:] == (LOST, False)
    assert len(fake.asked) == 4


def test_verification_needs_every_server_and_reports_a_lagging_secondary(inventory, resolver):
    resolver(ns1=[OURS], ns2=[NONE])
    stale = []
    assert verify.dns_answers(inventory, SITE, timeout=0, stale=stale) == {
        "ns1": [SITE.public_ip], "ns2": {"stale": []}}
    assert stale == [f"dns-secondary-stale: ns2 answers nothing, expected {SITE.public_ip}"]
    resolver(ns1=[NONE], ns2=[OURS])
    with pytest.raises(verify.VerificationFailed, match="ns1 answers nothing .authoritative=True., expected"):
        verify.dns_answers(inventory, SITE, timeout=0, stale=[])


def test_a_removal_is_read_back_only_when_every_server_answers_no_record(inventory, resolver):
    resolver(ns1=[NONE], ns2=[LOST, NONE])
    assert verify.dns_gone(inventory, SITE, timeout=1) == {"ns1": "no A record", "ns2": "no A record"}
    resolver(ns1=[NONE], ns2=[OURS])
    with pytest.raises(HostError, match=r"ns2 still answers \['203.0.113.130'\]"):
        verify.dns_gone(inventory, SITE, timeout=0)


def test_the_audit_asks_through_the_same_loop_and_keeps_each_servers_answer(inventory, resolver):
    other = SimpleNamespace(fqdn="lain.tarakankota.go.id")
    resolver(ns1=[OURS], ns2=[LOST])
    answers = audit.ns_answers(inventory, [SITE, other])
    assert list(answers) == [SITE.fqdn, other.fqdn]  # the sites' order, whatever finished first
    assert answers[SITE.fqdn] == {
        "ns1": {"addresses": [SITE.public_ip], "authoritative": True, "error": None},
        "ns2": {"addresses": [], "authoritative": False, "error": "no answer (Timeout)"}}
