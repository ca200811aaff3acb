"""A batch across both web servers and both database servers, one site failing alone (issue 13).

Five approved requests go through one `provision hosting ID... --apply`. Placement
spreads them by load, so they land on web1 and web2 and on db1 and db2. One of
them, a site with a dedicated address, finds a root-owned file where its home
directory goes on its web host (put there once the plan showed which host that is,
as something left by hand would be): its web step fails, it alone is compensated,
and the other four go live and pass every check from outside.

Approvals posted to the webhook together are gathered for its batch window and
provisioned as one batch by the real approval hook.
"""

import http.client
import io
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
from click.testing import CliRunner

from provisioner import credentials, ipam, verify, webhook
from provisioner.cli import main
from provisioner.errors import Waiting
from provisioner.lab import guard
from provisioner.sop.engine import Engine
from provisioner.sop.hooks import ACTIONS
from provisioner.store.models import RequestRow


def _approve_for_the_batch(office, request_ids):
    """Record each approval with the provisioning step left waiting, as when approvals come in
    before the batch that provisions them."""
    def left_to_the_batch(ctx):
        raise Waiting("provisioning is left to the batch")

    deferred = ACTIONS.copy()
    deferred.register("provision_site", left_to_the_batch, replace=True)
    engine = Engine(office.config, office.store, actions=deferred)
    for request_id in request_ids:
        engine.decide(request_id, True, engine.decision_role(request_id))


def _a_record(nameserver, fqdn):
    """(addresses, authoritative) of an A query to one name server."""
    guard.require_lab_route(nameserver.address)
    reply = dns.query.udp(dns.message.make_query(fqdn, dns.rdatatype.A), nameserver.address, timeout=3)
    addresses = sorted(r.address for rrset in reply.answer for r in rrset if rrset.rdtype == dns.rdatatype.A)
    return addresses, bool(reply.flags & dns.flags.AA)


def _https(fqdn, address, ca_file):
    """(status, body) of https://fqdn/ at the address, the certificate checked for the name."""
    guard.require_lab_route(address)
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", ca_file, "--resolve",
                          f"{fqdn}:443:{address}", "-w", "\n%{http_code}", f"https://{fqdn}/"],
                         capture_output=True, text=True, check=True).stdout
    body, _, status = out.rpartition("\n")
    return status, body


def _events_of(office, fqdn, *kinds):
    return [e for kind in kinds for e in office.events(kind) if e.payload.get("fqdn") == fqdn]


def test_a_batch_across_both_servers_where_one_site_fails_alone(office, lab_host):
    blocked_id = office.through_review("tarakan-simkes.yaml", dedicated_ip="true")
    ids = [blocked_id] + [office.through_review("tarakan-simkes.yaml") for _ in range(4)]
    _approve_for_the_batch(office, ids)

    _plan, sites = office.hosting.plan(ids)
    assert {s.web_host for s in sites} == {"web1", "web2"}
    assert {s.db_host for s in sites} == {"db1", "db2"}
    blocked = next(s for s in sites if s.request_id == blocked_id)
    web, db = lab_host(blocked.web_host), lab_host(blocked.db_host)
    home = blocked.names.home
    web.check_output("install -d -o root -g root -m 0711 %s", str(PurePosixPath(home).parent))
    assert not web.file(home).exists
    web.check_output("install -o root -g root -m 0600 /dev/null %s", home)
    try:
        result = CliRunner().invoke(main, ["hosting", *ids, "--apply"])

        # The summary names the failed site and why; the command says the batch did not fully succeed.
        assert result.exit_code != 0, result.output
        failed = office.site(blocked.fqdn)
        assert failed.state == "failed", (failed.state, failed.reason)
        assert home in failed.reason, failed.reason  # what was in the way, named
        assert [line for line in result.output.splitlines()
                if line.startswith("failed:") and blocked.fqdn in line and home in line], result.output

        # The other four are live, spread over both web servers and both database servers.
        live = [office.site(s.fqdn) for s in sites if s.fqdn != blocked.fqdn]
        assert [r.state if r else None for r in live] == ["provisioned"] * 4, result.output
        assert {r.web_host for r in live} == {"web1", "web2"}
        assert {r.db_host for r in live} == {"db1", "db2"}
        nameservers = office.hosting.inventory.group("nameservers")
        assert {ns.name for ns in nameservers} == {"ns1", "ns2"}
        ca_file = office.hosting.ca_file()
        for row in live:
            (provisioned,) = _events_of(office, row.fqdn, "site_provisioned")
            assert set(provisioned.payload["record"]["verified"]) >= {"dns", "http", "database", "sftp",
                                                                      "certificate"}
            assert not _events_of(office, row.fqdn, "saga_failed", "saga_compensated")
            status, body = _https(row.fqdn, row.public_ip, ca_file)
            assert status == "200" and row.fqdn in body
            for ns in nameservers:
                assert _a_record(ns, row.fqdn) == ([row.public_ip], True), ns.name
            (site,) = office.hosting.recorded_sites([row.fqdn])
            passwords = credentials.get(office.store, office.hosting.box, row.fqdn)
            assert verify.database_login(office.hosting.inventory, site, passwords["db"]) == {
                "databases": [site.names.db_name]}
            # Each site is on its own hosts only: the other web and database server have none of it.
            other_web = lab_host(({"web1", "web2"} - {row.web_host}).pop())
            other_db = lab_host(({"db1", "db2"} - {row.db_host}).pop())
            assert not other_web.user(site.names.user).exists
            assert not other_web.file(f"/etc/apache2/sites-available/{row.fqdn}.conf").exists
            assert site.names.db_name not in other_db.check_output("mysql -N -e 'SHOW DATABASES'").split()

        # The failed one was compensated alone: nothing of it on its hosts, its address back in the pool.
        assert [e.payload["step"] for e in _events_of(office, blocked.fqdn, "site_failed")] == ["web"]
        assert _events_of(office, blocked.fqdn, "saga_compensated")
        assert not web.user(blocked.names.user).exists
        assert not web.group(blocked.names.user).exists
        assert not web.file(f"/etc/apache2/sites-available/{blocked.fqdn}.conf").exists
        assert not web.file(f"/etc/apache2/sites-enabled/{blocked.fqdn}.conf").exists
        assert not web.file(f"/etc/php/{blocked.php_version}/fpm/pool.d/{blocked.names.pool}.conf").exists
        assert blocked.names.db_name not in db.check_output("mysql -N -e 'SHOW DATABASES'").split()
        assert blocked.names.db_user not in db.check_output("mysql -N -e 'SELECT User FROM mysql.user'").split()
        other_web = lab_host(({"web1", "web2"} - {blocked.web_host}).pop())
        other_db = lab_host(({"db1", "db2"} - {blocked.db_host}).pop())
        assert not other_web.user(blocked.names.user).exists
        assert blocked.names.db_name not in other_db.check_output("mysql -N -e 'SHOW DATABASES'").split()
        assert ipam.allocated(office.store, blocked.fqdn) is None
        reserved = [e.payload["address"] for e in office.events("ip_allocated") if e.payload.get("fqdn") == blocked.fqdn]
        assert reserved  # a dedicated address was taken for it, and given back
        for address in reserved:
            for host in (web, other_web):
                assert f" {address}/" not in host.check_output("ip -o -4 addr show")
        # What was in the way was not the toolkit's: it is left where it was.
        blocker = web.file(home)
        assert blocker.is_file and (blocker.user, blocker.mode) == ("root", 0o600)
    finally:
        web.run("if [ -f %s ] && [ ! -L %s ]; then rm -f -- %s; fi", home, home, home)


def _post_approval(server, secret, request_id, sha256, post_id):
    """A signed approval posted to the webhook on loopback: (status, answer)."""
    data = json.dumps({"request": request_id, "sha256": sha256, "decision": "approve"}).encode()
    stamp = str(int(time.time()))
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=600)
    try:
        conn.request("POST", webhook.PATH, body=data, headers={
            "Content-Type": "application/json", "X-Provisioner-Id": post_id, "X-Provisioner-Timestamp": stamp,
            "X-Provisioner-Signature": webhook.sign(secret, post_id, stamp, data)})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_approvals_posted_together_to_the_webhook_go_live_as_one_batch(office):
    ids = [office.through_review("tarakan-simkes.yaml") for _ in range(3)]
    with office.store.session() as session:
        digests = {i: session.get(RequestRow, i).sha256 for i in ids}
    secret = b"lab-webhook-secret-" + b"0123456789abcdefgh"
    # The real approval hook (provision_site, then the letter), gathering for three seconds.
    engine = Engine(office.config, office.store)
    server = webhook.DecisionServer(("127.0.0.1", 0), engine, secret, max_skew=300, log=io.StringIO(),
                                    batch_window=3.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(len(ids)) as senders:
            answers = {i: senders.submit(_post_approval, server, secret, i, digests[i], f"lab-batch-{n}")
                       for n, i in enumerate(ids)}
            replies = {i: answer.result(timeout=900) for i, answer in answers.items()}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    for request_id, (status, reply) in replies.items():
        assert status == 200, reply
        assert [a["action"] for a in reply["actions"]] == ["provision_site", "render_letter"], reply
    fqdns = [engine.show(i)["fqdn"] for i in ids]
    rows = [office.site(f) for f in fqdns]
    assert [r.state for r in rows] == ["provisioned"] * 3
    # One batch: one plan (its checksum on every site's saga events, a plan of all three).
    intents = [e for e in office.events("saga_intent") if e.payload.get("fqdn") in fqdns]
    assert {e.payload["checksum"] for e in intents} and len({e.payload["checksum"] for e in intents}) == 1
    web_intents = [e for e in intents if e.payload["step"] == "web"]
    assert sorted(e.payload["fqdn"] for e in web_intents) == sorted(fqdns)
    ca_file = office.hosting.ca_file()
    for row in rows:
        status, body = _https(row.fqdn, row.public_ip, ca_file)
        assert status == "200" and row.fqdn in body
