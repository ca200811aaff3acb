"""Hardening against the real lab: a killed apply leaves nothing behind; applies never overlap.

- SIGKILL of `provision hosting ID --apply` while ansible-playbook runs: no
  ansible-playbook or ssh of that run survives, its secrets file is removed by
  the next run, and the next apply converges.
- Two applies of one request at once: one site, no duplicates, the other is
  refused as locked.
- Two requests wanting the last dedicated address: one gets it, the other a
  clear "pool exhausted" and nothing left behind.

Each case needs a fresh provisioning of its own. The first three make their
sites in the module's state home (`module_office`), each looking only at its
own site, so the sites are removed together in one run at the end; the last
one changes its office's inventory, so it keeps its own state home.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

from provisioner import runner
from provisioner.errors import StateError
from provisioner.hosting import Hosting
from provisioner.lab import guard, topology
from provisioner.store.models import IPAllocation, SiteRow

from labkit import ROOT

SHM = Path(runner._secret_dir() or "/tmp")


def _cli(office, *args):
    """`provision ...` as its own process, in the office's state home."""
    env = dict(os.environ, PROVISIONER_HOME=str(office.home))
    env.pop("PROVISIONER_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "provisioner.cli", *args], cwd=office.home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _processes():
    """{pid: (ppid, command line)} of every process on the machine."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("State", "").startswith("Z"):
            continue  # a zombie has already died
        found[int(proc.name)] = (int(fields["PPid"]), cmdline)
    return found


def _descendants(root):
    table = _processes()
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: table[pid][1] for pid in tree - {root} if pid in table}


def _wait_for(predicate, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def _http(address, fqdn):
    guard.require_lab_route(address)
    return requests.get(f"http://{address}/", headers={"Host": fqdn}, timeout=5, allow_redirects=False)


def test_sigkill_during_ansible_leaves_no_process_and_no_secret(module_office, lab_host):
    office = module_office  # the module's state home: its site is removed with the others at the end
    request_id = office.through_review("tarakan-simkes.yaml", tls="false")
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    apply = _cli(office, "hosting", request_id, "--apply")

    def running():
        # Kill once ansible-playbook is connected to a host (ssh runs) with its secrets file written.
        tree = _descendants(apply.pid)
        playing = [p for p, cmd in tree.items() if "ansible-playbook" in cmd]
        connected = [p for p, cmd in tree.items() if cmd.startswith("ssh ")]
        secrets = list(SHM.glob(f"{runner.SECRETS_PREFIX}{apply.pid}-*/secrets.json"))
        return tree if playing and connected and secrets else None

    tree = _wait_for(running, timeout=180)
    assert tree, f"ansible-playbook never ran: {apply.poll()} {apply.stderr.read() if apply.poll() else ''}"
    os.kill(apply.pid, signal.SIGKILL)
    apply.wait(10)
    apply.stdout.close()
    apply.stderr.close()

    deadline = time.monotonic() + 15
    while True:
        survivors = {p: c for p, c in _processes().items() if p in tree and c == tree[p]}
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert survivors == {}, survivors
    # The killed run could not remove its secrets file; the next run does.
    stale = list(SHM.glob(f"{runner.SECRETS_PREFIX}{apply.pid}-*"))
    assert stale

    result = office.hosting.apply([request_id])
    assert not list(SHM.glob(f"{runner.SECRETS_PREFIX}{apply.pid}-*"))
    assert not [p for p in SHM.glob(f"{runner.SECRETS_PREFIX}*")
                if not runner._pid_alive(int(p.name[len(runner.SECRETS_PREFIX):].split("-")[0]))]
    (record,) = result.sites
    assert office.site(site.fqdn).state == "provisioned"
    assert record["fqdn"] == site.fqdn
    assert _http(site.public_ip, site.fqdn).status_code == 200
    web = lab_host(office.site(site.fqdn).web_host)
    assert web.check_output(f"getent passwd {site.names.user}").count(site.names.user) == 1


def test_two_applies_of_one_request_at_once_make_one_site(module_office, lab_host):
    office = module_office  # the module's state home: its site is removed with the others at the end
    request_id = office.through_review("tarakan-simkes.yaml", tls="false")
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    both = [_cli(office, "hosting", request_id, "--apply"), _cli(office, "hosting", request_id, "--apply")]
    outcomes = [(*p.communicate(timeout=600), p.returncode) for p in both]
    codes = sorted(code for _, _, code in outcomes)
    assert codes[0] == 0 and codes[1] in (2, 6), outcomes  # 2: StateError, 6: ActionError
    (loser,) = [err for _, err, code in outcomes if code]
    # Refused by the action's claim or by the site lock, whichever it reached first.
    assert re.search(rf"site:{re.escape(site.fqdn)} is locked by .*another apply is running"
                     r"|action provision_site was claimed by another process", loser), loser
    assert "Traceback" not in loser
    _one_site(office, lab_host, request_id, site)


def test_two_threads_applying_one_request_make_one_site(module_office, lab_host):
    """Two webhook threads of one process: the lock belongs to one apply, so one of them is refused."""
    office = module_office  # the module's state home: its site is removed with the others at the end
    request_id = office.through_review("tarakan-simkes.yaml", tls="false")
    office.approve_without_hook(request_id)
    (site,) = office.hosting.desired(office.hosting.load_requests([request_id]))
    start, outcomes = threading.Barrier(2), []

    def apply():
        work = Hosting(office.config, office.store, source="webhook")
        start.wait(30)
        try:
            work.apply([request_id])
            outcomes.append("applied")
        except StateError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert sorted(outcomes)[0] == "applied", outcomes
    assert re.fullmatch(rf"site:{re.escape(site.fqdn)} is locked by \S+:{os.getpid()}:[0-9a-f]{{16}} since .*"
                        r"another apply is running", sorted(outcomes)[1]), outcomes
    _one_site(office, lab_host, request_id, site)


def _one_site(office, lab_host, request_id, site):
    with office.store.session() as session:
        rows = session.query(SiteRow).filter(SiteRow.request_id == request_id).all()
    assert [(r.fqdn, r.state) for r in rows] == [(site.fqdn, "provisioned")]
    web, db = lab_host(rows[0].web_host), lab_host(rows[0].db_host)
    assert web.check_output(f"getent passwd {site.names.user}").count(f"{site.names.user}:") == 1
    assert web.check_output("ls /etc/apache2/sites-enabled").split().count(f"{site.fqdn}.conf") == 1
    users = db.check_output(f"mysql -N -e \"SELECT host FROM mysql.user WHERE user='{site.names.db_user}'\"")
    assert len(users.split()) == 1
    assert _http(site.public_ip, site.fqdn).status_code == 200


def _small_pool(office, lab_host) -> str:
    """A copy of the lab inventory whose web1 pool is one address not in use; the office config uses it.

    web1 is the copy's only web server, so both requests are placed on it whichever is recorded
    first, and race for that one address.
    """
    in_use = lab_host("web1").check_output("ip -o -4 addr show dev eth0")
    with office.store.session() as session:
        allocated = {a.address for a in session.query(IPAllocation)}
    first, last = topology.host("web1").dedicated_pool
    free = next(str(a) for a in (last - i for i in range(int(last) - int(first) + 1))
                if f"{a}/" not in in_use and str(a) not in allocated)
    inventory = office.home / "inventory"
    subprocess.run(["cp", "-r", str(ROOT / "inventory" / "lab"), str(inventory)], check=True)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    web_hosts = hosts["all"]["children"]["web"]["hosts"]
    for other in [name for name in web_hosts if name != "web1"]:
        del web_hosts[other]
    web_hosts["web1"]["public_ip_pool"] = f"{free}-{free}"
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (office.home / "provisioner.yaml").write_text(f"hosting:\n  inventory: {inventory}\n")
    return free


def test_two_requests_for_the_last_dedicated_address(office, lab_host):
    first = office.through_review("buleleng-sipandu.yaml", tls="false")
    second = office.through_review("buleleng-sipandu.yaml", tls="false")
    for request_id in (first, second):
        office.approve_without_hook(request_id)
    sites = {r: office.hosting.desired(office.hosting.load_requests([r]))[0] for r in (first, second)}
    last = _small_pool(office, lab_host)
    both = {r: _cli(office, "hosting", r, "--apply") for r in (first, second)}
    outcomes = {r: (*p.communicate(timeout=600), p.returncode) for r, p in both.items()}
    winners = [r for r, (_, _, code) in outcomes.items() if code == 0]
    losers = [r for r, (_, _, code) in outcomes.items() if code != 0]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    (winner,), (loser,) = winners, losers
    _, err, code = outcomes[loser]
    assert code in (2, 6), err  # a StateError, reported through the approval's action (6) or directly (2)
    assert "public IP pool of web1 is exhausted (1 addresses)" in err and "Traceback" not in err
    won, lost = sites[winner], sites[loser]
    assert office.site(won.fqdn).state == "provisioned" and office.site(won.fqdn).public_ip == last
    assert _http(last, won.fqdn).status_code == 200
    # Nothing of the loser anywhere: no row, no address, no vhost, no user.
    assert office.site(lost.fqdn) is None
    with office.store.session() as session:
        assert [a.fqdn for a in session.query(IPAllocation)] == [won.fqdn]
    web = lab_host("web1")
    assert not web.file(f"/etc/apache2/sites-available/{lost.fqdn}.conf").exists
    assert not web.user(lost.names.user).exists
    assert web.check_output("ip -o -4 addr show dev eth0").count(f"{last}/") == 1
