"""Dedicated addresses kept across a web server's restart, without hosts.

The public_ip role's script runs here for real on a file in tmp_path (`keep`,
`forget`, `up` with a stand-in `ip` that records what it is asked); the audit
and the ip target's plan get live data as the probe reports it; the lab's
restart drops only what the lab's topology does not configure.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
import yaml

from provisioner import audit, naming
from provisioner.lab import network, topology
from provisioner.site import DesiredSite
from provisioner.targets import ip as ip_target
from provisioner.targets import probe

ROLE = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "public_ip"
SCRIPT = ROLE / "files" / "provisioner-public-addresses"

# Stands in for iproute2: `addr replace CIDR dev DEV` is recorded (and fails for
# the device "gone0"), `-o -4 addr show` lists what was recorded.
FAKE_IP = """#!/bin/sh
case "$*" in
    "addr replace "*)
        [ "$5" = gone0 ] && { echo "Cannot find device \\"$5\\"" >&2; exit 1; }
        grep -qx "$3 $5" "$FAKE_IP_STATE" 2>/dev/null || echo "$3 $5" >> "$FAKE_IP_STATE"
        ;;
    "-o -4 addr show")
        [ -f "$FAKE_IP_STATE" ] || exit 0
        while read -r cidr dev; do echo "2: $dev    inet $cidr scope global $dev"; done < "$FAKE_IP_STATE"
        ;;
    *) echo "unexpected: ip $*" >&2; exit 9 ;;
esac
"""


@pytest.fixture
def host(tmp_path):
    """The script's environment: its file in tmp_path and the stand-in `ip` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(FAKE_IP)
    (bin_dir / "ip").chmod(0o755)
    kept = tmp_path / "etc" / "provisioner" / "public-addresses"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PROVISIONER_PUBLIC_ADDRESSES": str(kept),
           "FAKE_IP_STATE": str(tmp_path / "ip-state")}

    def run(*args):
        return subprocess.run(["/bin/sh", str(SCRIPT), *args], env=env, capture_output=True, text=True)

    def lines():
        return [line for line in kept.read_text().splitlines() if not line.startswith("#")]

    def up_now():
        state = tmp_path / "ip-state"
        return state.read_text().splitlines() if state.exists() else []

    return type("Host", (), {"run": staticmethod(run), "kept": kept, "lines": staticmethod(lines),
                             "up_now": staticmethod(up_now), "env": env})


def test_keep_writes_one_line_per_address_and_reports_only_a_change(host):
    first = host.run("keep", "203.0.113.140/32", "eth0")
    assert (first.returncode, first.stdout.strip()) == (0, "changed")
    assert host.lines() == ["203.0.113.140/32 eth0"]
    assert stat.S_IMODE(host.kept.stat().st_mode) == 0o644
    again = host.run("keep", "203.0.113.140/32", "eth0")
    assert (again.returncode, again.stdout) == (0, "")
    host.run("keep", "203.0.113.131/32", "eth0")
    # A new prefix or device for an address replaces its line.
    assert host.run("keep", "203.0.113.140/24", "eth1").stdout.strip() == "changed"
    assert host.lines() == ["203.0.113.131/32 eth0", "203.0.113.140/24 eth1"]
    # Written whole then renamed: no temporary file is left next to it, only the lock file.
    assert sorted(p.name for p in host.kept.parent.iterdir()) == ["public-addresses", "public-addresses.lock"]


def test_forget_drops_only_that_address(host):
    host.run("keep", "203.0.113.140/32", "eth0")
    host.run("keep", "203.0.113.14/32", "eth0")  # a prefix of the other's text, not the same address
    gone = host.run("forget", "203.0.113.140")
    assert (gone.returncode, gone.stdout.strip()) == (0, "changed")
    assert host.lines() == ["203.0.113.14/32 eth0"]
    assert host.run("forget", "203.0.113.140").stdout == ""
    assert host.run("list").stdout.splitlines() == ["203.0.113.14/32 eth0"]


# Stands in for sort: slow, so a writer's read and its rename lie far apart and
# two writers without a lock would overlap (the later rename drops the other's line).
SLOW_SORT = """#!/bin/sh
sleep 0.05
exec /usr/bin/sort "$@"
"""


def test_two_writers_at_once_lose_no_line(host, tmp_path):
    (tmp_path / "bin" / "sort").write_text(SLOW_SORT)
    (tmp_path / "bin" / "sort").chmod(0o755)
    host.run("keep", "203.0.113.200/32", "eth0")
    host.run("keep", "203.0.113.201/32", "eth0")
    # Each writer keeps 8 addresses of its own; the second also forgets one kept before.
    loops = ["for n in 130 131 132 133 134 135 136 137; do sh \"$0\" keep 203.0.113.$n/32 eth0; done",
             "sh \"$0\" forget 203.0.113.200; "
             "for n in 140 141 142 143 144 145 146 147; do sh \"$0\" keep 203.0.113.$n/32 eth1; done"]
    writers = [subprocess.Popen(["/bin/sh", "-c", loop, str(SCRIPT)], env=host.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for loop in loops]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and err == "", err
    assert sorted(host.lines()) == sorted(["203.0.113.201/32 eth0"]
                                          + [f"203.0.113.{n}/32 eth0" for n in range(130, 138)]
                                          + [f"203.0.113.{n}/32 eth1" for n in range(140, 148)])


def test_forget_without_a_file_makes_none(host):
    result = host.run("forget", "203.0.113.140")
    assert (result.returncode, result.stdout) == (0, "")
    assert not host.kept.exists()


@pytest.mark.parametrize("args", [
    ("keep", "203.0.113.140", "eth0"),          # no prefix
    ("keep", "203.0.113.300/32", "eth0"),       # not an address
    ("keep", "203.0.113.140/33", "eth0"),       # prefix out of range
    ("keep", "203.0.113.140/32", "eth0; reboot"),
    ("keep", "203.0.113.140/32"),
    ("forget", "203.0.113.0/24"),
    ("wipe",),
])
def test_bad_input_is_refused_and_the_file_kept(host, args):
    host.run("keep", "203.0.113.131/32", "eth0")
    before = host.kept.read_text()
    result = host.run(*args)
    assert result.returncode == 2 and result.stderr.startswith("provisioner-public-addresses: ")
    assert host.kept.read_text() == before


def test_up_brings_every_kept_address_up_and_again_changes_nothing(host):
    host.run("keep", "203.0.113.140/32", "eth0")
    host.run("keep", "203.0.113.131/32", "eth0")
    with host.kept.open("a") as f:
        f.write("\n# an operator's note\nnot-an-address eth0\n")
    first = host.run("up")
    assert first.returncode == 0, first.stderr
    assert sorted(host.up_now()) == ["203.0.113.131/32 eth0", "203.0.113.140/32 eth0"]
    assert "skipped a malformed line: not-an-address eth0" in first.stderr
    assert host.run("up").returncode == 0
    assert sorted(host.up_now()) == ["203.0.113.131/32 eth0", "203.0.113.140/32 eth0"]


def test_up_brings_up_the_others_and_fails_when_one_cannot_come_up(host):
    host.run("keep", "203.0.113.140/32", "gone0")
    host.run("keep", "203.0.113.131/32", "eth0")
    result = host.run("up")
    assert result.returncode == 1
    assert "cannot bring 203.0.113.140/32 up on gone0" in result.stderr
    assert host.up_now() == ["203.0.113.131/32 eth0"]


def test_up_without_a_file_does_nothing(host):
    result = host.run("up")
    assert (result.returncode, result.stderr) == (0, "")
    assert host.up_now() == []


def test_up_with_a_device_brings_up_only_that_devices_addresses(host):
    host.run("keep", "203.0.113.140/32", "eth1")
    host.run("keep", "203.0.113.131/32", "eth0")
    result = host.run("up", "eth1")
    assert result.returncode == 0, result.stderr
    assert host.up_now() == ["203.0.113.140/32 eth1"]
    assert host.run("up", "eth1; reboot").returncode == 2


HOOK = ROLE / "files" / "provisioner-public-addresses.if-up"


@pytest.fixture
def if_up(host, tmp_path):
    """Runs the ifupdown hook as ifup does (IFACE, MODE), its script the role's on the stand-in `ip`."""
    # The hook sets its own PATH; the script it calls puts the stand-in `ip` first again.
    wrapper = tmp_path / "script"
    wrapper.write_text(f'#!/bin/sh\nPATH="{tmp_path / "bin"}:/usr/bin:/bin" exec /bin/sh "{SCRIPT}" "$@"\n')
    wrapper.chmod(0o755)

    def run(iface, mode="start"):
        env = {**host.env, "IFACE": iface, "MODE": mode, "PHASE": "post-up",
               "PROVISIONER_PUBLIC_ADDRESSES_SCRIPT": str(wrapper)}
        return subprocess.run(["/bin/sh", str(HOOK)], env=env, capture_output=True, text=True)
    return run


def test_the_ifupdown_hook_brings_an_interfaces_addresses_back_after_a_flush(host, if_up):
    host.run("keep", "203.0.113.140/32", "eth1")
    host.run("keep", "203.0.113.141/32", "eth1")
    host.run("keep", "203.0.113.131/32", "eth0")
    # ifdown eth1 / `systemctl restart networking` flushed eth1; ifup runs the hook for it.
    result = if_up("eth1")
    assert (result.returncode, result.stderr) == (0, "")
    assert sorted(host.up_now()) == ["203.0.113.140/32 eth1", "203.0.113.141/32 eth1"]
    # Again changes nothing; other interfaces, `ifup -a`'s --all call and a stop do nothing.
    assert if_up("eth1").returncode == 0 and len(host.up_now()) == 2
    for iface, mode in (("--all", "start"), ("eth0", "stop"), ("eth2", "start")):
        assert if_up(iface, mode).returncode == 0
    assert sorted(host.up_now()) == ["203.0.113.140/32 eth1", "203.0.113.141/32 eth1"]


def test_the_ifupdown_hook_never_fails_the_interface(host, if_up):
    host.run("keep", "203.0.113.140/32", "gone0")
    result = if_up("gone0")
    assert result.returncode == 0
    assert "cannot bring 203.0.113.140/32 up on gone0" in result.stderr
    assert "not every kept address came up on gone0" in result.stderr


def test_the_role_installs_the_ifupdown_hook_where_ifupdown_is():
    tasks = {t["name"]: t for t in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())}
    install = tasks["Install the hook that brings the addresses up again with their interface (ifupdown)"]
    copy = install["ansible.builtin.copy"]
    assert (copy["src"], copy["mode"]) == (HOOK.name, "0755")
    # run-parts, which ifupdown uses, skips a name with a dot in it.
    assert re.fullmatch(r"/etc/network/if-up\.d/[A-Za-z0-9_-]+", copy["dest"])
    assert tasks["Find ifupdown"]["ansible.builtin.stat"]["path"] == "/etc/network/if-up.d"
    assert install["when"] == "public_ip__ifupdown.stat.isdir | default(false)"
    # `systemctl restart networking` restarts the boot unit after it.
    unit = (ROLE / "files" / "provisioner-public-addresses.service").read_text()
    assert "PartOf=networking.service" in unit
    assert re.search(r"^After=.*\bnetworking\.service\b", unit, re.M)


def test_the_boot_hooks_run_the_script_after_the_network():
    unit = (ROLE / "files" / "provisioner-public-addresses.service").read_text()
    assert "After=network-online.target" in unit and "Wants=network-online.target" in unit
    assert "Type=oneshot" in unit and "RemainAfterExit=yes" in unit
    assert "ExecStart=/usr/local/sbin/provisioner-public-addresses up" in unit
    assert "WantedBy=multi-user.target" in unit
    init = (ROLE / "files" / "provisioner-public-addresses.init").read_text()
    assert re.search(r"start\|.*\)\n\s+provisioner-public-addresses up", init)
    tasks = (ROLE / "tasks" / "main.yml").read_text()
    assert "dest: /etc/init.d/provisioner-public-addresses" in tasks and "path: /etc/lab/services" in tasks


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify needs ExecStart to exist: a copy points at the script in the role.
    unit = tmp_path / "provisioner-public-addresses.service"
    text = (ROLE / "files" / unit.name).read_text()
    unit.write_text(text.replace("/usr/local/sbin/provisioner-public-addresses", str(SCRIPT)))
    run = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (run.stdout + run.stderr).splitlines() if "provisioner-public-addresses" in line]
    assert run.returncode == 0 and not problems, run.stdout + run.stderr


# -- which interface: the public one, beside the shared address ---------------------

# `ip -o -4 addr show` of a server with a management NIC (192.0.2.0/24, as
# inventory/example) and a public one (198.51.100.0/24).
TWO_NICS = [
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever",
    "2: eth0    inet 192.0.2.21/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever",
    "3: eth1    inet 198.51.100.10/24 brd 198.51.100.255 scope global eth1\\       valid_lft forever",
    "3: eth1    inet 198.51.100.100/32 scope global eth1\\       valid_lft forever preferred_lft forever",
]


def _choose_interface(tmp_path, probe_lines, **host_vars):
    """Run the role's tasks/interface.yml on this machine (nothing is changed); its choice or failure."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    playbook = tmp_path / "choose.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "tasks": [{"ansible.builtin.import_tasks": str(ROLE / "tasks" / "interface.yml")},
                  {"ansible.builtin.debug": {"msg": "CHOSEN {{ public_ip__interface }}"}}]}]))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({**host_vars, "public_ip__probe": {"stdout_lines": probe_lines}}))
    result = subprocess.run([str(playbook_bin), "-i", "localhost,", "-e", f"@{extra}", str(playbook)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"})
    chosen = re.search(r'"msg": "CHOSEN (\S+)"', result.stdout)
    return (chosen.group(1) if chosen else None), result.stdout


def test_dedicated_addresses_go_on_the_interface_of_the_shared_public_address(tmp_path):
    chosen, out = _choose_interface(tmp_path, TWO_NICS, ansible_host="192.0.2.21", public_ip="198.51.100.10")
    assert chosen == "eth1", out


def test_without_a_public_ip_on_the_host_the_management_interface_is_used(tmp_path):
    # No public_ip, or one the host does not hold itself (the lab's single NIC holds both).
    assert _choose_interface(tmp_path, TWO_NICS, ansible_host="192.0.2.21")[0] == "eth0"
    assert _choose_interface(tmp_path, TWO_NICS, ansible_host="192.0.2.21", public_ip="198.51.100.99")[0] == "eth0"


def test_a_host_carrying_neither_address_is_refused(tmp_path):
    chosen, out = _choose_interface(tmp_path, TWO_NICS[:1], ansible_host="192.0.2.21", public_ip="198.51.100.10")
    assert chosen is None
    assert "no interface carries 198.51.100.10 (public_ip) or 192.0.2.21 (ansible_host)" in out
    chosen, out = _choose_interface(tmp_path, TWO_NICS[:1], ansible_host="192.0.2.21")
    assert chosen is None and '"no interface carries 192.0.2.21 (ansible_host)"' in out


def test_addresses_are_added_moved_and_kept_on_the_chosen_interface():
    tasks = {t["name"]: t for t in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())}
    assert tasks["Choose the interface the addresses go on"]["ansible.builtin.import_tasks"] == "interface.yml"
    assert tasks["Bring addresses up"]["ansible.builtin.command"]["argv"][-1] == "{{ public_ip__interface }}"
    # One up on another interface (an earlier version used the management one) is taken off it first ...
    move = tasks["Take addresses off an interface they do not belong on"]
    assert "public_ip__current[item.address] != public_ip__interface" in move["when"]
    assert "public_ip__current[item.address] | default('') != public_ip__interface" in tasks["Bring addresses up"]["when"]
    # ... and the kept line names the chosen interface, whatever the address is on now.
    assert tasks["Keep the addresses brought up"]["ansible.builtin.command"]["argv"][-1] == "{{ public_ip__interface }}"


# -- what reads the file: the probe and the audit; the plan does not -----------------


def _kept_addresses_function():
    source = re.search(r"(?ms)^def kept_addresses\(path\):.*?(?=^\S)", probe.WEB_PROBE).group(0)
    scope = {}
    exec(source, scope)  # the probe's own function, as it runs on the host
    return scope["kept_addresses"]


def test_the_probe_reads_the_kept_addresses(tmp_path):
    kept = _kept_addresses_function()
    path = tmp_path / "public-addresses"
    path.write_text("# header\n203.0.113.140/32 eth0\n\n203.0.113.131/24 eth1\n")
    assert kept(str(path)) == ["203.0.113.131", "203.0.113.140"]
    assert kept(str(tmp_path / "missing")) == []


def _site(ip="203.0.113.140") -> DesiredSite:
    zone = "bulelengkab.go.id"
    return DesiredSite(request_id="KOM-2024-0031", office="buleleng", label="sipandu", zone=zone,
                       names=naming.site_names("sipandu", zone), web_host="web1", web_address="10.77.0.21",
                       db_host=None, public_ip=ip, dedicated_ip=True, php=False, php_version="8.2",
                       database=False, tls=False, quota_mb=512, bandwidth_kbps=0)


def test_an_address_up_but_not_kept_is_a_medium_finding():
    site = _site()
    (finding,) = audit._ip(site, {"web1": {"addresses": ["10.77.0.21", site.public_ip], "kept_addresses": []}})
    assert (finding.kind, finding.severity, finding.site, finding.host) == (
        "ip-not-persistent", "medium", site.fqdn, "web1")
    assert "/etc/provisioner/public-addresses" in finding.expected and "restarts" in finding.found
    assert "public_ip.yml --limit web1" in finding.fix
    assert audit._ip(site, {"web1": {"addresses": [site.public_ip], "kept_addresses": [site.public_ip]}}) == []


def test_an_address_that_is_down_is_only_missing():
    site = _site()
    findings = audit._ip(site, {"web1": {"addresses": ["10.77.0.21"], "kept_addresses": [site.public_ip]}})
    assert [f.kind for f in findings] == ["ip-missing"]


def test_the_plan_reads_the_live_addresses_only():
    site = _site()
    up_not_kept = {"web1": {"addresses": [site.public_ip], "kept_addresses": []}}
    assert ip_target.plan([site], up_not_kept) == []
    down_but_kept = {"web1": {"addresses": [], "kept_addresses": [site.public_ip]}}
    (change,) = ip_target.plan([site], down_but_kept)
    assert (change.action, change.target, change.name) == ("Create", "ip", site.public_ip)


# -- the lab's restart: a reboot drops the addresses only the kernel held ------------


def test_a_lab_restart_drops_only_what_the_topology_does_not_configure(monkeypatch):
    web = topology.host("web1")
    on_eth0 = [("10.77.0.21", 24), ("203.0.113.10", 28), ("203.0.113.140", 32), ("203.0.113.131", 24)]
    calls = []

    def fake_run(*argv, check=True, **kwargs):
        calls.append(argv)
        out = ""
        if "show" in argv:
            out = json.dumps([{"ifname": "eth0", "addr_info": [
                {"family": "inet", "local": a, "prefixlen": p} for a, p in on_eth0]}])
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    monkeypatch.setattr(network, "run", fake_run)
    dropped = network.drop_runtime_addresses(web)
    assert dropped == [IPv4Interface("203.0.113.140/32"), IPv4Interface("203.0.113.131/24")]
    deletes = [c for c in calls if "del" in c]
    assert deletes == [("ip", "-n", web.netns, "addr", "del", "203.0.113.140/32", "dev", "eth0"),
                       ("ip", "-n", web.netns, "addr", "del", "203.0.113.131/24", "dev", "eth0")]


@pytest.fixture
def lab_calls(monkeypatch, tmp_path):
    """lifecycle.restart_host with the host's processes, network and SSH replaced by a record of calls."""
    from provisioner.lab import lifecycle

    calls = []
    running = {"web1": 4242}
    monkeypatch.setattr(lifecycle, "require_root", lambda what: None)
    monkeypatch.setattr(lifecycle, "LOCK_FILE", str(tmp_path / "lab.lock"))
    monkeypatch.setattr(lifecycle.hosts, "pid", lambda h: running.get(h.name))
    monkeypatch.setattr(lifecycle.hosts, "stop", lambda h: calls.append(("stop", h.name)))
    monkeypatch.setattr(lifecycle.hosts, "start", lambda h: calls.append(("start", h.name)))
    monkeypatch.setattr(lifecycle.network, "drop_runtime_addresses",
                        lambda h: calls.append(("drop", h.name)) or [IPv4Interface("203.0.113.140/32")])
    monkeypatch.setattr(lifecycle.remote, "wait_for_ssh", lambda h, timeout: calls.append(("ssh", h.name)))
    monkeypatch.setattr(lifecycle.remote, "run_script",
                        lambda h, script, env: calls.append(("booted?", h.name)) or "booted\n")
    return lifecycle, calls, running


def test_restart_host_stops_drops_starts_and_waits_for_the_init(lab_calls):
    lifecycle, calls, _ = lab_calls
    assert lifecycle.restart_host("web1") == ["203.0.113.140/32"]
    assert calls == [("stop", "web1"), ("drop", "web1"), ("start", "web1"), ("ssh", "web1"), ("booted?", "web1")]


def test_restart_host_refuses_an_unknown_or_stopped_host(lab_calls):
    from provisioner.errors import LabError

    lifecycle, calls, running = lab_calls
    with pytest.raises(LabError, match="no lab host named 'web9'"):
        lifecycle.restart_host("web9")
    running.clear()
    with pytest.raises(LabError, match="web1 is not running"):
        lifecycle.restart_host("web1")
    assert calls == []
