"""`provision host prepare` and `provision inventory check` on the real lab, through the CLI.

The lab's hosts are prepared: the plan (check mode with diff) names every
host it prepares and finds nothing to change, for all of them, for a group
and for a host. A change made by hand to a file host_web manages is named
in the plan with its diff, then the file is put back exactly as it was.

`inventory check` reads the lab's key files on this machine (the controller);
a broken copy of an inventory fails with exit 2 and names every problem at
once, each as file:line: host or group: key: rule.

A plan takes tens of seconds: each is timed and the time printed (pytest -s).
"""

import json
import secrets
import shutil
import time

import pytest
from click.testing import CliRunner

from provisioner import ssh
from provisioner.cli import main
from provisioner.inventory import load_inventory
from provisioner.lab import lifecycle

from labkit import ROOT

LAB = ROOT / "inventory" / "lab"
EXAMPLE = ROOT / "inventory" / "example"
# The hosts of inventory/lab in the groups host prepare prepares (ca1, the ACME host, is in none).
PREPARED = ["backup1", "db1", "db2", "ns1", "ns2", "web1", "web2"]
# A file host_web writes (task "Set the global ServerName").
SERVERNAME = "/etc/apache2/conf-available/provisioner-servername.conf"
SAVED = "/root/provisioner-servername.conf.saved-by-lab-test"


@pytest.fixture
def at_root(office, monkeypatch):
    """A fresh state home (office), run from the repository as a user would: `inventory/lab` is relative."""
    monkeypatch.chdir(ROOT)
    return office


def _cli(*args):
    started = time.monotonic()
    result = CliRunner().invoke(main, list(args))
    took = time.monotonic() - started
    assert "Traceback" not in result.output, result.output
    return result, took


def _plan(*args):
    result, took = _cli("host", "prepare", *args)
    print(f"provision host prepare {' '.join(args)}: {took:.1f}s, exit {result.exit_code}")
    assert result.exit_code == 0, result.output
    # The primary is prepared with the API key; it never reaches the output.
    assert lifecycle.pdns_api_key() not in result.output
    return result


def _named(stdout: str) -> list[str]:
    """The hosts a text plan names: its lines that are not indented details or the closing hint."""
    return [line.split(":")[0] for line in stdout.splitlines()
            if line and not line.startswith(" ") and not line.startswith("plan only:")]


def _on(host: str, script: str) -> str:
    """A shell script as root on a lab host (ssh.run checks the route to the lab first)."""
    rc, out, err = ssh.run(load_inventory(LAB).host(host), "sh -s", stdin="set -eu\n" + script, sudo=True)
    assert rc == 0, f"{host}: {err or out}"
    return out


def _state(host: str, path: str) -> str:
    """What `copy` compares of a file: its content, mode, owner and group (and its mtime, to prove it untouched)."""
    return _on(host, f"stat -c '%a %U %G %s %Y' {path}; sha256sum {path}").strip()


# -- host prepare ----------------------------------------------------------------

def test_a_file_changed_by_hand_is_named_in_the_plan_with_its_diff(at_root):
    before = _state("web1", SERVERNAME)
    marker = f"# changed by hand {secrets.token_hex(4)}"
    try:
        # The original goes aside with its mode, owner and times; the file gets one line more.
        _on("web1", f"cp -a {SERVERNAME} {SAVED}\necho '{marker}' >> {SERVERNAME}\n")
        result = _plan("web1", "--inventory", "inventory/lab")
    finally:
        _on("web1", f"if [ -e {SAVED} ]; then mv -f {SAVED} {SERVERNAME}; fi\n")
    assert _state("web1", SERVERNAME) == before

    lines = result.stdout.splitlines()
    # Only the host asked for; the plan says it would make changes and how to make them.
    assert _named(result.stdout) == ["web1"], result.stdout
    assert lines[0].startswith("web1: ") and "change(s)" in lines[0]
    assert lines[-1] == "plan only: run again with --apply to make these changes"
    # The file's task, with the diff from what is there now to what host_web writes.
    at = lines.index("  ~ host_web: Set the global ServerName")
    diff = lines[at + 1:at + 8]
    assert f"      --- {SERVERNAME} (now)" in diff and f"      +++ {SERVERNAME} (after)" in diff
    assert f"      -{marker}" in lines
    # A new ServerName file restarts Apache; the lab's init has no dry run, so the plan says it.
    at = lines.index("  ~ host_common: Name what a real run would do to apache2")
    assert lines[at + 1] == "      would restart apache2"
    # Nothing else: every change of the plan is the file's or the restart it causes.
    assert [line for line in lines if line.startswith("  ~ ")] == [
        "  ~ host_web: Set the global ServerName", "  ~ host_common: Name what a real run would do to apache2"]


def test_the_prepared_lab_has_nothing_to_change(at_root):
    result = _plan("--inventory", "inventory/lab")
    assert result.stdout.splitlines() == [f"{name}: nothing to change" for name in PREPARED], result.output


def test_a_group_plans_only_its_hosts_and_finds_nothing(at_root):
    result = _plan("nameservers", "--inventory", "inventory/lab", "--json")
    plan = json.loads(result.stdout)
    assert plan == {"check": True, "changed": False, "counted": {}, "hosts": {"ns1": [], "ns2": []}}, plan


def test_a_host_plans_only_itself_and_finds_nothing(at_root):
    result = _plan("db1", "--inventory", "inventory/lab")
    assert result.stdout.splitlines() == ["db1: nothing to change"], result.output


# -- inventory check -------------------------------------------------------------

def _check(*args):
    result, _took = _cli("inventory", "check", *map(str, args))
    return result


def _line_of(file, marker) -> int:
    return next(n for n, line in enumerate(file.read_text().splitlines(), 1) if marker in line)


def _edit(file, old, new):
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    file.write_text(text.replace(old, new))


def test_the_lab_inventory_passes_with_its_key_files_on_this_controller(at_root):
    result = _check("inventory/lab")
    assert result.exit_code == 0, result.output
    (summary,) = result.stdout.splitlines()
    assert summary.startswith("inventory/lab: ok: 8 hosts in 5 groups (nameservers 2, web 2, db 2, acme 1, backup 1); "
                              "primary name server ns1; pools web1 203.0.113.128-203.0.113.191 (64), "
                              "web2 203.0.113.192-203.0.113.254 (63)"), summary
    # The key files were looked at, not skipped.
    assert "not checked" not in summary and result.stderr == ""


def test_the_example_passes_offline(at_root):
    result = _check("inventory/example", "--offline")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("inventory/example: ok: 6 hosts in 3 groups (nameservers 2, web 2, db 2)")
    assert "key files not checked (--offline)" in result.stdout


def test_a_broken_example_names_every_problem_with_file_line_host_and_key(at_root, tmp_path):
    copy = tmp_path / "example"
    shutil.copytree(EXAMPLE, copy)
    hosts = copy / "hosts.yml"
    # ns2 comes before web1: removing web1's line moves neither.
    web1, ns2_role = _line_of(hosts, "web1.example.go.id:"), _line_of(hosts, "pdns_role: secondary")
    # Two things broken at once: web1 loses its address, ns2 becomes a second primary.
    _edit(hosts, "          ansible_host: 192.0.2.21\n", "")
    _edit(hosts, "192.0.2.12\n          pdns_role: secondary", "192.0.2.12\n          pdns_role: primary")

    result = _check(copy, "--offline")
    assert result.exit_code == 2, result.output
    problems = result.stderr.splitlines()
    assert f"{hosts}:{web1}: web1.example.go.id: ansible_host: missing: without it Ansible connects to the host " \
           "name, and database grants and the public IP role would be given the name, not the address" in problems
    assert f"{hosts}:{ns2_role}: ns2.example.go.id: pdns_role: primary again: ns1.example.go.id is already the " \
           "primary, and the toolkit writes to exactly one" in problems
    assert problems[-1].startswith(f"{copy}: 2 problem(s): 6 hosts in 3 groups"), problems


def test_a_missing_api_key_file_on_the_lab_copy_is_named_with_the_other_problem(at_root, tmp_path):
    copy = tmp_path / "lab"
    shutil.copytree(LAB, copy)
    missing = tmp_path / "no-such-dir" / "pdns-api-key"
    group_vars = copy / "group_vars" / "nameservers.yml"
    _edit(group_vars, "pdns_api_key_file: /var/lib/provisioner-lab/secrets/pdns-api-key",
          f"pdns_api_key_file: {missing}")
    hosts = copy / "hosts.yml"
    web1 = _line_of(hosts, "web1:")
    _edit(hosts, "          ansible_host: 10.77.0.21\n", "")

    result = _check(copy)  # not --offline: the key files are looked for on this machine
    assert result.exit_code == 2, result.output
    problems = result.stderr.splitlines()
    key_line = _line_of(group_vars, "pdns_api_key_file:")
    # A key file set for the whole group is named once, for the group that sets it, where it is written.
    assert f"{group_vars}:{key_line}: group nameservers: pdns_api_key_file: {missing} does not exist on this " \
           "machine (use --offline to check an inventory away from the controller)" in problems
    assert f"{hosts}:{web1}: web1: ansible_host: missing: without it Ansible connects to the host name, and " \
           "database grants and the public IP role would be given the name, not the address" in problems
    # The lab's SSH key is there and private: it is not a problem.
    assert not [p for p in problems if "ansible_ssh_private_key_file" in p]
    assert problems[-1].startswith(f"{copy}: 2 problem(s): 8 hosts in 5 groups"), problems
