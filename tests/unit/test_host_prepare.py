"""`provision host prepare`: the plan read from a recorded run, host selection, secrets, CLI, playbook.

tests/unit/data/host_prepare_events.json holds the ansible-runner events of two
real check-mode runs of playbooks/host_prepare.yml on one Debian 12 host (the
lab's image, no systemd) in all three groups: `fresh` before anything was
prepared, `prepared` after an apply.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from provisioner import host_prepare
from provisioner.cli import main
from provisioner.config import REPO_ROOT
from provisioner.errors import ConfigError, HostError
from provisioner.inventory import load_inventory
from provisioner.inventory_check import HOST_PREPARE_VARS, check_inventory
from provisioner.lab import lifecycle

EVENTS = json.loads((Path(__file__).parent / "data" / "host_prepare_events.json").read_text())
ROLES = REPO_ROOT / "playbooks" / "roles"
LAB = REPO_ROOT / "inventory" / "lab"


def _changes(plan, host="sb1"):
    return {c.title(): c for c in plan.hosts[host].changes}


# --- The plan, from a recorded run ----------------------------------------------

def test_a_fresh_host_plans_every_part_with_its_diff():
    plan = host_prepare.parse_events(EVENTS["fresh"], ["sb1"])
    changes = _changes(plan)
    assert plan.changed and plan.check

    settings = changes["host_ns: Write the PowerDNS settings"]
    # The destination names the file, not the template's temporary copy.
    assert settings.detail[0] == "--- /etc/powerdns/pdns.d/provisioner.conf (now)"
    assert "+launch=gsqlite3" in settings.detail
    assert "+api=yes" in settings.detail
    assert "+webserver-allow-from=127.0.0.0/8,127.0.0.1/32" in settings.detail

    assert changes["host_ns: Name the zones a real run would create [tarakankota.go.id]"].detail == [
        "would create primary zone tarakankota.go.id (NS sb1.tarakankota.go.id, sb2.tarakankota.go.id)"]
    assert "+bind-address = 127.0.0.1" in changes["host_db: Let the web servers reach MariaDB"].detail
    assert changes["host_web: Enable the Apache modules [ssl.load]"].detail == [
        "/etc/apache2/mods-enabled/ssl.load: state absent -> link"]
    assert changes["host_web: Create the directories the sites live in [/srv/www]"].detail == [
        "/srv/www: state absent -> directory"]
    # Services are restarted by `service` on a host without systemd: the plan says so.
    assert changes["host_common: Name what a real run would do to pdns"].detail == ["would restart pdns"]


def test_loop_items_are_the_changes_and_their_summary_is_not_counted_again():
    plan = host_prepare.parse_events(EVENTS["fresh"], ["sb1"])
    modules = [c for c in plan.hosts["sb1"].changes if c.task == "Enable the Apache modules"]
    # setenvif is enabled by Debian already: 9 of the 11 module files change.
    assert sorted(c.item for c in modules) == sorted([
        "headers.load", "proxy.conf", "proxy.load", "proxy_fcgi.load", "ratelimit.load", "rewrite.load",
        "socache_shmcb.load", "ssl.conf", "ssl.load"])
    # Every task Ansible counted as changed is in the plan, and no other.
    stats = next(e for e in EVENTS["fresh"] if e["event"] == "playbook_on_stats")["event_data"]
    assert len({(c.role, c.task) for c in plan.hosts["sb1"].changes}) == stats["changed"]["sb1"]


def test_the_api_key_task_is_a_change_without_any_detail():
    plan = host_prepare.parse_events(EVENTS["fresh"], ["sb1"])
    key = _changes(plan)["host_ns: Write the API key"]
    assert key.censored and key.item == ""
    assert key.detail == ["(details hidden: the task handles a secret)"]
    # The recorded no_log results carry nothing but the censored note.
    for event in EVENTS["fresh"]:
        if event["event_data"].get("task") in ("Write the API key", "Check that the API answers with the key"):
            assert set(event["event_data"].get("res") or {"censored": 1}) == {"censored"}


def test_a_prepared_host_has_nothing_to_change():
    plan = host_prepare.parse_events(EVENTS["prepared"], ["sb1"])
    assert not plan.changed
    assert plan.lines() == ["sb1: nothing to change"]
    assert plan.as_dict() == {"check": True, "changed": False, "counted": {}, "hosts": {"sb1": []}}


def test_a_change_ansible_counted_but_the_events_did_not_show_still_counts():
    plan = host_prepare.parse_events(EVENTS["prepared"], ["sb1"])
    plan.counted = {"sb1": 1}
    assert plan.changed
    assert plan.lines() == ["sb1: 1 change(s) the run's events did not describe"]


def test_a_host_the_run_did_not_touch_is_listed_with_nothing_to_change():
    plan = host_prepare.parse_events(EVENTS["fresh"], ["sb1", "web9"])
    lines = plan.lines()
    assert lines[0].startswith("sb1: ") and "web9: nothing to change" in lines
    assert json.loads(json.dumps(plan.as_dict()))["hosts"]["web9"] == []


def test_read_events_orders_the_artifact_files_and_skips_broken_ones(tmp_path):
    events = tmp_path / "ident" / "job_events"
    events.mkdir(parents=True)
    for n, event in enumerate(EVENTS["prepared"][:5]):
        (events / f"{n}-x.json").write_text(json.dumps(event | {"counter": 5 - n}))
    (events / "9-partial.json").write_text('{"event": ')
    assert [e["counter"] for e in host_prepare.read_events(tmp_path)] == [1, 2, 3, 4, 5]


# --- Hosts and secrets ----------------------------------------------------------------

def test_targets_are_hosts_or_groups_of_the_groups_the_playbook_prepares():
    inventory = load_inventory(LAB)
    every = ["backup1", "db1", "db2", "ns1", "ns2", "web1", "web2"]
    assert host_prepare.select_hosts(inventory) == every
    assert host_prepare.select_hosts(inventory, "all") == every
    assert host_prepare.select_hosts(inventory, "nameservers") == ["ns1", "ns2"]
    assert host_prepare.select_hosts(inventory, "web") == ["web1", "web2"]
    assert host_prepare.select_hosts(inventory, "backup") == ["backup1"]
    assert host_prepare.select_hosts(inventory, "web1") == ["web1"]
    with pytest.raises(ConfigError, match="'ca1' is in none of the groups nameservers, db, web, backup"):
        host_prepare.select_hosts(inventory, "ca1")
    with pytest.raises(ConfigError, match="group 'acme' has no host in the groups"):
        host_prepare.select_hosts(inventory, "acme")
    with pytest.raises(ConfigError, match="'mail1' is neither a host nor a group"):
        host_prepare.select_hosts(inventory, "mail1")


@pytest.fixture
def lab_copy(tmp_path):
    """The lab inventory with its API key file on a path of the test's own."""
    copy = tmp_path / "inventory"
    shutil.copytree(LAB, copy)
    key_file = tmp_path / "pdns-api-key"
    vars_file = copy / "group_vars" / "nameservers.yml"
    data = yaml.safe_load(vars_file.read_text())
    data["pdns_api_key_file"] = str(key_file)
    vars_file.write_text(yaml.safe_dump(data))
    return copy, key_file


def test_the_api_key_is_read_only_when_a_name_server_with_the_api_is_prepared(lab_copy):
    copy, key_file = lab_copy
    key_file.write_text("k3y-from-the-file-0123456789\n")
    inventory = load_inventory(copy)
    key = {"pdns_api_key": "k3y-from-the-file-0123456789"}
    assert host_prepare.secrets_for(inventory, ["ns1", "ns2"]) == key
    # The lab's secondary serves the API too (for transfers on demand): the same key.
    assert inventory.host("ns2").vars["pdns_api_url"] and host_prepare.secrets_for(inventory, ["ns2"]) == key
    key_file.unlink()
    # Nothing else needs it, so a missing key file does not stop them.
    assert host_prepare.secrets_for(inventory, ["db1", "web1", "web2"]) == {}
    hosts = copy / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("pdns_api_url: http://10.77.0.12:8081/api/v1", ""))
    assert host_prepare.secrets_for(load_inventory(copy), ["ns2"]) == {}


def test_an_unreadable_or_empty_key_file_is_named_and_its_content_never_shown(lab_copy):
    copy, key_file = lab_copy
    inventory = load_inventory(copy)
    with pytest.raises(ConfigError, match=f"cannot read the PowerDNS API key {key_file} \\(pdns_api_key_file\\)"):
        host_prepare.secrets_for(inventory, ["ns1"])
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        host_prepare.secrets_for(inventory, ["ns1"])


def test_apply_runs_for_real_then_looks_again_and_fails_on_anything_left(monkeypatch):
    runs = []
    left = host_prepare.parse_events(EVENTS["fresh"], ["sb1"])
    nothing = host_prepare.parse_events(EVENTS["prepared"], ["sb1"])
    monkeypatch.setattr(host_prepare, "_prepare", lambda path, target: (Path(path), ["sb1"], {}))

    def fake_run(path, hosts, secrets, check, timeout):
        runs.append(check)
        return proofs.pop(0)
    monkeypatch.setattr(host_prepare, "_run", fake_run)

    proofs = [left, nothing]
    assert host_prepare.apply("inv", "sb1").proof is nothing
    assert runs == [False, True]

    proofs = [left, left]
    with pytest.raises(HostError, match="a second look still finds changes: sb1: host_ns: Write the PowerDNS"):
        host_prepare.apply("inv", "sb1")


# --- The CLI ---------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch, tmp_path):
    calls = []
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def fake_plan(inventory, target, timeout):
        calls.append(("plan", Path(inventory), target, timeout))
        return host_prepare.parse_events(EVENTS["fresh"], ["sb1"])

    def fake_apply(inventory, target, timeout):
        calls.append(("apply", Path(inventory), target, timeout))
        return host_prepare.ApplyResult(host_prepare.parse_events(EVENTS["fresh"], ["sb1"], check=False),
                                        host_prepare.parse_events(EVENTS["prepared"], ["sb1"]))
    monkeypatch.setattr(host_prepare, "plan", fake_plan)
    monkeypatch.setattr(host_prepare, "apply", fake_apply)

    def invoke(*args):
        return CliRunner().invoke(main, ["host", "prepare", *args], catch_exceptions=False)
    return invoke, calls


def test_cli_plans_everything_by_default_on_the_configured_inventory(cli):
    invoke, calls = cli
    result = invoke()
    assert result.exit_code == 0
    assert calls == [("plan", LAB, None, 1800)]
    assert result.output.startswith("sb1: 37 change(s)\n")
    assert "  ~ host_ns: Write the PowerDNS settings\n" in result.output
    assert result.output.endswith("plan only: run again with --apply to make these changes\n")


def test_cli_applies_to_a_target_of_another_inventory_and_prints_json(cli, tmp_path):
    invoke, calls = cli
    result = invoke("web", "--apply", "--inventory", str(tmp_path / "inv"), "--json")
    assert result.exit_code == 0
    assert calls == [("apply", tmp_path / "inv", "web", 1800)]
    out = json.loads(result.output)
    assert out["applied"]["check"] is False and out["left"] == {
        "check": True, "changed": False, "counted": {}, "hosts": {"sb1": []}}


def test_cli_apply_says_a_second_look_found_nothing(cli):
    invoke, _calls = cli
    result = invoke("sb1", "--apply")
    assert result.output.splitlines()[0] == "sb1: 37 change(s) made"
    assert result.output.endswith("checked again: nothing left to change\n")


def test_cli_refuses_unknown_options(cli):
    invoke, calls = cli
    result = invoke("--aply")
    assert result.exit_code == 2 and "No such option '--aply'" in result.output and calls == []


# --- The playbook and roles --------------------------------------------------------------

def test_the_playbook_passes_ansible_syntax_check():
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    result = subprocess.run([str(playbook_bin), "--syntax-check", "-i", str(LAB), "playbooks/host_prepare.yml"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: playbooks/host_prepare.yml" in result.stdout


def _tasks(path):
    found = {}

    def walk(tasks):
        for task in tasks or ():
            found[task.get("name")] = task
            for key in ("block", "rescue", "always"):
                walk(task.get(key))
    walk(yaml.safe_load(path.read_text()))
    return found


def test_host_web_writes_the_php_fpm_umask_exactly_as_the_web_site_role_does():
    # Both roles write these files; any difference would make each undo the other at every run.
    web = _tasks(ROLES / "host_web" / "tasks" / "configure.yml")
    site = _tasks(ROLES / "web_site" / "tasks" / "php_fpm.yml")
    site_vars = yaml.safe_load((ROLES / "web_site" / "vars" / "main.yml").read_text())
    name = "Give PHP-FPM umask 0027 under systemd"
    assert site[name]["ansible.builtin.copy"]["content"] == "{{ web_site__fpm_dropin }}"
    assert web[name]["ansible.builtin.copy"]["content"] == site_vars["web_site__fpm_dropin"]
    name = "Give PHP-FPM umask 0027 when its init script starts it"
    assert site[name]["ansible.builtin.lineinfile"]["line"] == "{{ web_site__fpm_umask_line }}"
    assert web[name]["ansible.builtin.lineinfile"]["line"] == site_vars["web_site__fpm_umask_line"]
    assert web[name]["ansible.builtin.lineinfile"]["regexp"] == site[name]["ansible.builtin.lineinfile"]["regexp"]
    drop_in = web["Write the sshd drop-in that chroots site accounts"]["ansible.builtin.template"]
    assert drop_in["src"].endswith("/../web_site/templates/etc/ssh/sshd_config.d/20-provisioner-sftp.conf.j2")
    web_defaults = yaml.safe_load((ROLES / "host_web" / "defaults" / "main.yml").read_text())
    site_defaults = yaml.safe_load((ROLES / "web_site" / "defaults" / "main.yml").read_text())
    for key in ("sftp_group", "sshd_dropin", "tls_dir", "home_base", "log_base"):
        assert web_defaults[f"host_web__{key}"] == site_defaults[f"web_site__{key}"]


def test_the_roles_install_the_lab_image_packages():
    listed = {line.strip() for line in (REPO_ROOT / "provisioner" / "lab" / "packages.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for role in ("host_web", "host_db", "host_ns", "host_backup"):
        packages = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())[f"{role}__packages"]
        assert set(packages) <= listed, f"{role}: {set(packages) - listed} not in packages.txt"


# --- The lab is configured by these playbooks -------------------------------------------

def _applied_once(applied):
    result = host_prepare.ApplyResult(host_prepare.parse_events(EVENTS["fresh"], ["sb1"], check=False),
                                      host_prepare.parse_events(EVENTS["prepared"], ["sb1"]))
    return lambda path: applied.append(("host prepare", path)) or result


def test_lab_up_configures_its_servers_with_host_prepare(monkeypatch, tmp_path):
    """`lab up` runs host prepare on inventory/lab once the hosts answer SSH, then the lab's extras, then its checks."""
    calls = []
    record = lambda what: (lambda *a, **k: calls.append((what,) + tuple(getattr(x, "name", x) for x in a)))
    down = lifecycle.LabStatus(bridge=False, hosts=[])
    monkeypatch.setattr(lifecycle, "require_root", lambda what: None)
    monkeypatch.setattr(lifecycle, "_check_tools", lambda: None)
    monkeypatch.setattr(lifecycle, "LOCK_FILE", str(tmp_path / "lab.lock"))
    monkeypatch.setattr(lifecycle, "status", lambda: down)
    # Never the real lab: no leftovers seen, and taking anything down is a failure.
    monkeypatch.setattr(lifecycle.topology, "HOSTS_DIR", tmp_path / "no-hosts")
    monkeypatch.setattr(lifecycle, "_down", lambda **k: pytest.fail("a unit test must not take the lab down"))
    monkeypatch.setattr(lifecycle, "_check_mirror_outside_lab", lambda: None)
    monkeypatch.setattr(lifecycle.rootfs, "ensure_cache", lambda log: tmp_path / "lower")
    monkeypatch.setattr(lifecycle, "_ensure_secrets", lambda: "ssh-ed25519 AAAA lab")
    monkeypatch.setattr(lifecycle.tls, "ensure_lab_ca", lambda path: None)
    monkeypatch.setattr(lifecycle.network, "ensure_bridge", lambda: None)
    monkeypatch.setattr(lifecycle.network, "ensure_host_network", lambda h: None)
    monkeypatch.setattr(lifecycle.hosts, "mount_root", lambda h, lower: None)
    monkeypatch.setattr(lifecycle.hosts, "install_boot_files", lambda h, line, key: "HOSTKEY")
    monkeypatch.setattr(lifecycle, "_write_ssh_files", lambda keys: None)
    monkeypatch.setattr(lifecycle.hosts, "start", record("start"))
    monkeypatch.setattr(lifecycle.remote, "wait_for_ssh", record("ssh"))
    monkeypatch.setattr(host_prepare, "apply", _applied_once(calls))
    monkeypatch.setattr(lifecycle, "_acme_tls", lambda: SimpleNamespace(cert="CERT", key="KEY"))
    monkeypatch.setattr(lifecycle.remote, "run_script", lambda h, script, env: calls.append(("script", h.name, env["LAB_PHASE"])))
    monkeypatch.setattr(lifecycle, "_wait_ready", record("dns ready"))
    monkeypatch.setattr(lifecycle, "_wait_acme", record("acme ready"))
    monkeypatch.setattr(lifecycle, "refresh_acme_roots", record("roots"))
    logged = []
    lifecycle.up(log=logged.append)
    names = [h.name for h in lifecycle.topology.HOSTS]
    assert calls[:len(names)] == [("start", n) for n in names]
    assert sorted(calls[len(names):2 * len(names)]) == sorted(("ssh", n) for n in names)
    assert calls[2 * len(names):] == [("host prepare", LAB), ("script", "ca1", "lab"),
                                      ("dns ready",), ("acme ready",), ("roots",)]
    assert "  host prepare: 37 change(s) on sb1; a second look finds none" in logged
    # Each phase is still timed, the services phase among them.
    timed = [line.split()[0] for line in logged if re.fullmatch(r"  \S+ +\d+\.\ds", line)]
    assert timed == ["cache", "network", "hosts", "services", "checks", "total"]


def test_the_lab_script_adds_only_the_acme_server(monkeypatch):
    calls, scripts = [], []
    monkeypatch.setattr(host_prepare, "apply", _applied_once(calls))
    monkeypatch.setattr(lifecycle, "_acme_tls", lambda: SimpleNamespace(cert="CERT", key="KEY"))
    monkeypatch.setattr(lifecycle.remote, "run_script", lambda h, script, env: scripts.append((h.name, script, env)))
    # The key reaches the primary through host prepare's secrets, not the script's environment.
    monkeypatch.setattr(lifecycle, "pdns_api_key", lambda: pytest.fail("the lab phase must not need the API key"))
    lifecycle._services(log=lambda line: None)
    assert calls == [("host prepare", LAB)]
    assert lifecycle.LAB_INVENTORY == LAB
    [(name, script, env)] = scripts
    assert name == "ca1" and script == (REPO_ROOT / "provisioner" / "lab" / "scripts" / "setup-host.sh").read_text()
    assert env["LAB_PHASE"] == "lab" and env["LAB_ROLE"] == "acme" and env["PEBBLE_TLS_KEY"] == "KEY"
    assert not any(k.startswith("PDNS") for k in env)


def test_the_lab_script_configures_no_production_service():
    script = (REPO_ROOT / "provisioner" / "lab" / "scripts" / "setup-host.sh").read_text()
    dispatch = script[script.index('case "$LAB_PHASE" in'):]
    # Its phases: packages, base and lab; no service-role phase.
    assert re.findall(r"^    (\w+)\)", dispatch, re.M) == ["packages", "base", "lab"]
    lab_phase = dispatch[dispatch.index("    lab)\n"):dispatch.index("    *) echo \"unknown phase")]
    assert re.findall(r"\) (\w+) ;;", lab_phase) == ["lab_acme", "lab_public_addresses"]
    # What host prepare's roles configure is configured nowhere in it.
    for production in ("pdnsutil", "pdns.d", "a2enmod", "a2enconf", "mariadb", "php8.2-fpm", "apache2"):
        assert production not in script, production


# --- What the roles read of the inventory, and what the inventory check knows -------------

# Names the roles read that are not the inventory's: Jinja's words, Ansible's own
# variables, and (any name with a double underscore) the roles' own variables.
NOT_INVENTORY = {"if", "elif", "else", "endif", "for", "endfor", "in", "set", "not", "and", "or", "is", "true",
                 "false", "none", "True", "False", "None", "loop", "hostvars", "groups", "inventory_hostname",
                 "item", "role_path", "ansible_check_mode", "ansible_failed_result", "omit"}
# Values that are Jinja expressions without braces.
EXPRESSION_KEYS = {"when", "that", "until", "failed_when", "changed_when"}
# A filter, a test, an attribute, a keyword argument (dropped), or a bare name (kept).
TOKEN = re.compile(r"\|\s*\w+|\bis\s+(?:not\s+)?\w+|\.\s*[A-Za-z_]\w*|\w+\s*=(?!=)|\b([A-Za-z_]\w*)")


def _expressions(path):
    """Every Jinja expression of a role file (a template, or a YAML file's strings)."""
    def braces(text):
        return re.findall(r"\{\{(.*?)\}\}|\{%(.*?)%\}", text, re.S)

    if path.suffix == ".j2":
        return [path.read_text()], ["".join(pair) for pair in braces(path.read_text())]
    units, found = [], []

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            units.append(value)
            found.extend([value] if key in EXPRESSION_KEYS else ["".join(pair) for pair in braces(value)])
    walk(yaml.safe_load(path.read_text()))
    return units, found


def _inventory_variables_read():
    """{variable: files} of what host prepare's playbook and roles read from the inventory."""
    files = [REPO_ROOT / "playbooks" / "host_prepare.yml"]
    for role in ("host_common", "host_db", "host_ns", "host_web"):
        files += sorted(p for p in (ROLES / role).rglob("*") if p.suffix in (".yml", ".j2"))
    read = {}
    for path in files:
        units, expressions = _expressions(path)
        names = set()
        for unit in units:
            # Another host's variables: hostvars[h].NAME, and attributes taken from
            # a list of hosts (map('extract', hostvars) | map(attribute='NAME')).
            if "hostvars" in unit:
                names |= set(re.findall(r"hostvars\[[^\]]*\]\.(\w+)", unit))
                names |= set(re.findall(r"(?:attribute=|selectattr\()\s*['\"](\w+)", unit))
        # Names a template sets itself ({% set x = ... %}, {% for x in ... %}).
        local = {m.group(2) for e in expressions for m in [re.match(r"\s*-?\s*(set|for)\s+(\w+)", e)] if m}
        for expr in expressions:
            expr = re.sub(r"'[^']*'|\"[^\"]*\"", "''", expr)
            names |= {m.group(1) for m in TOKEN.finditer(expr) if m.group(1)}
        for name in names - local - NOT_INVENTORY:
            if "__" not in name:
                read.setdefault(name, []).append(str(path.relative_to(REPO_ROOT)))
    return read


def test_the_inventory_check_knows_every_variable_host_prepare_reads():
    read = _inventory_variables_read()
    # The walk finds what the roles are known to read (it would be useless otherwise) ...
    assert {"pdns_role", "dns_zones", "pdns_api_url", "pdns_api_allow_from", "pdns_ns_name", "pdns_public_address",
            "ansible_host", "mariadb_bind_address", "provisioner_secrets"} <= set(read)
    # ... and every name it finds has a rule in the check, and the check lists nothing the roles do not read.
    unknown = {name: files for name, files in read.items() if name not in HOST_PREPARE_VARS}
    assert not unknown, f"host prepare reads inventory variables inventory_check.HOST_PREPARE_VARS lacks: {unknown}"
    assert set(HOST_PREPARE_VARS) == set(read)


# The roles' own refusals (every assert of host_ns and host_db), run on an inventory
# without touching any host: an assert is evaluated on the controller.
def _assert_tasks(role):
    tasks = []
    for name in ("main.yml", "configure.yml"):
        tasks += [t for t in yaml.safe_load((ROLES / role / "tasks" / name).read_text()) or ()
                  if "ansible.builtin.assert" in t]
    return tasks


def _run_role_asserts(inventory, tmp_path):
    """{host: failed?} after the asserts of host_ns (name servers) and host_db (db) on `inventory`."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    plays = []
    for role, group in (("host_ns", "nameservers"), ("host_db", "db")):
        vars_files = [str(p) for p in (ROLES / role / "defaults" / "main.yml", ROLES / role / "vars" / "main.yml")
                      if p.exists()]
        plays.append({"name": role, "hosts": group, "gather_facts": False, "vars_files": vars_files,
                      "tasks": _assert_tasks(role)})
    playbook = tmp_path / "asserts.yml"
    playbook.write_text(yaml.safe_dump(plays))
    # The secret the toolkit would pass: a key of the length host_ns wants.
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"provisioner_secrets": {"pdns_api_key": "k" * 24}}))
    result = subprocess.run([str(playbook_bin), "-i", str(inventory), "-e", f"@{secrets}", str(playbook)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"})
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", result.stdout, re.M)
    assert recap, result.stdout + result.stderr
    return {host: failed != "0" for host, failed in recap}, result.stdout


def test_the_example_and_the_lab_pass_the_roles_own_checks(tmp_path):
    for inventory in (REPO_ROOT / "inventory" / "example", LAB):
        assert check_inventory(inventory, offline=True).ok
        failed, out = _run_role_asserts(inventory, tmp_path)
        assert failed and not any(failed.values()), out


def test_host_backup_refuses_an_account_a_directory_or_keys_it_cannot_use(tmp_path):
    """host_backup's own assert, on the controller: one backup host per case, no host is reached."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9uddLm9VpLG9Fqx+adkQPtLdCkM3JNQ6Fsgu8A2347 provisioner-lab"
    cases = {
        "good": {"backup_authorized_keys": [key]},
        "good-defaults-and-two-keys": {"backup_authorized_keys": [key, key.replace(" provisioner-lab", "")]},
        "no-keys": {"backup_authorized_keys": []},
        "not-a-key": {"backup_authorized_keys": ["ssh-ed25519"]},
        "a-private-key": {"backup_authorized_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]},
        "srv-itself": {"backup_authorized_keys": [key], "backup_path": "/srv"},
        "relative-path": {"backup_authorized_keys": [key], "backup_path": "srv/restic"},
        "bad-account": {"backup_authorized_keys": [key], "backup_user": "Restic;id"},
    }
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"backup": {"hosts": {
        name: {"ansible_host": "127.0.0.1", **variables} for name, variables in cases.items()}}}}}))
    tasks = _assert_tasks("host_backup")
    assert len(tasks) == 1
    playbook = tmp_path / "asserts.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "backup", "gather_facts": False,
                                         "vars_files": [str(ROLES / "host_backup" / "defaults" / "main.yml")],
                                         "tasks": tasks}]))
    result = subprocess.run([str(playbook_bin), "-i", str(inventory), str(playbook)], capture_output=True, text=True,
                            timeout=120, check=False,
                            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"})
    recap = dict(re.findall(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", result.stdout, re.M))
    assert recap == {"good": "0", "good-defaults-and-two-keys": "0", "no-keys": "1", "not-a-key": "1",
                     "a-private-key": "1", "srv-itself": "1", "relative-path": "1", "bad-account": "1"}, result.stdout
    # The refusal names the variables and their rule.
    assert "backup_authorized_keys a non-empty list of public key lines" in result.stdout


def _example_without(tmp_path, name):
    """A copy of the example with the variable `name` removed wherever it is written."""
    copy = tmp_path / "inventory"
    shutil.copytree(REPO_ROOT / "inventory" / "example", copy)
    for file in [copy / "hosts.yml", *sorted((copy / "group_vars").glob("*.yml"))]:
        data = yaml.safe_load(file.read_text())

        def drop(value):
            if isinstance(value, dict):
                value.pop(name, None)
                for v in value.values():
                    drop(v)
        drop(data)
        file.write_text(yaml.safe_dump(data))
    return copy


# Each variable host prepare cannot do without, as the inventory writes it.
REQUIRED = sorted({"pdns_api_key_file" if name == "provisioner_secrets" else name
                   for name, who in HOST_PREPARE_VARS.items() if who})


@pytest.mark.parametrize("name", REQUIRED)
def test_an_inventory_without_a_variable_host_prepare_needs_fails_the_check(tmp_path, name):
    copy = _example_without(tmp_path, name)
    report = check_inventory(copy, offline=True)
    assert any(p.key == name for p in report.problems), [str(p) for p in report.problems]
    if name in ("pdns_role", "ansible_host", "pdns_api_key_file"):
        return  # the playbook places hosts by pdns_role, needs addresses to connect, the toolkit reads the key
    # ... and the roles' own checks refuse it too: the check said no more than host prepare needs.
    failed, out = _run_role_asserts(copy, tmp_path)
    assert failed["ns1.example.go.id"], out


def test_the_glue_is_the_public_address_and_by_default_ansible_host(tmp_path):
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    playbook = tmp_path / "plan.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "nameservers", "gather_facts": False,
        "vars_files": [str(ROLES / "host_ns" / "defaults" / "main.yml"), str(ROLES / "host_ns" / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.debug": {"msg": "GLUE {{ host_ns__zone_plan | map(attribute='glue') | to_json }}"},
                   "when": "pdns_role == 'primary'"}]}]))

    def glue(inventory):
        result = subprocess.run([str(playbook_bin), "-i", str(inventory), str(playbook)], capture_output=True,
                                text=True, timeout=120, check=False, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
        assert result.returncode == 0, result.stdout + result.stderr
        line = next(line for line in result.stdout.splitlines() if '"msg": "GLUE ' in line)
        return json.loads(json.loads(line.split(": ", 1)[1])[len("GLUE "):])

    # The example's zone holds the public addresses, never the management ones (192.0.2.x).
    assert glue(REPO_ROOT / "inventory" / "example") == [[["ns1", "198.51.100.53"], ["ns2", "203.0.113.53"]]]
    # The lab's name servers are asked on their lab addresses: no pdns_public_address, ansible_host.
    assert glue(LAB) == [[["ns1", "10.77.0.11"], ["ns2", "10.77.0.12"]]] * 2


# --- A name server whose zones another backend holds --------------------------------------
# host_ns writes launch=gsqlite3, which replaces what pdns.conf and the pdns.d files launch:
# its files/pdns-backends (run on the server) tells Debian's example bind backend, which
# holds no zone, from a backend an office's zones are in, and tasks/backends.yml refuses those.

PDNS_BACKENDS = ROLES / "host_ns" / "files" / "pdns-backends"
# Debian 12's pdns-server pdns.conf (its settings) and pdns-backend-bind's two files.
DEBIAN_PDNS_CONF = "# PowerDNS configuration file\ninclude-dir=/etc/powerdns/pdns.d\nlaunch=\nsecurity-poll-suffix=\n"
DEBIAN_BIND_CONF = """# See https://doc.powerdns.com/authoritative/backends/bind.html
launch+=bind

#################################
# bind-config	Location of named.conf
#
# bind-config=
bind-config=/etc/powerdns/named.conf

# bind-supermaster-config=
bind-supermaster-config=/var/lib/powerdns/supermaster.conf
bind-supermaster-destdir=/var/lib/powerdns/zones.slave.d
"""
DEBIAN_NAMED_CONF = """# Debian default: supermaster created zones are written here:
include "/var/lib/powerdns/supermaster.conf";

# Example for a manually configured slave zone:
#
# zone "example.net" {
#   file "/var/lib/powerdns/zones.slave.d/example.net.zone";
#   type slave;
#   masters { 192.0.2.53; };
# };
"""
OFFICE_ZONE = 'zone "bulungan.go.id" {\n  type master;\n  file "/var/lib/powerdns/bulungan.go.id.zone";\n};\n'


@pytest.fixture
def pdns_root(tmp_path):
    """A name server's /etc/powerdns as Debian installs pdns-server and pdns-backend-bind, under tmp_path."""
    root = tmp_path / "root"
    files = {"etc/powerdns/pdns.conf": DEBIAN_PDNS_CONF, "etc/powerdns/pdns.d/bind.conf": DEBIAN_BIND_CONF,
             "etc/powerdns/named.conf": DEBIAN_NAMED_CONF, "var/lib/powerdns/supermaster.conf": ""}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _backends(root):
    result = subprocess.run([sys.executable, str(PDNS_BACKENDS), "--root", str(root),
                             "--own", "provisioner.conf", "--own", "provisioner-api-key.conf"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _foreign(root):
    return [(f["file"], f["line"], f["text"]) for f in _backends(root)["foreign"]]


def test_debians_example_bind_backend_holds_no_zone_and_may_be_replaced(pdns_root):
    found = _backends(pdns_root)
    assert [(f["file"], f["backends"]) for f in found["launches"]] == [
        ("/etc/powerdns/pdns.conf", []), ("/etc/powerdns/pdns.d/bind.conf", ["bind"])]
    assert found["foreign"] == [] and found["bind_zones"] == 0
    # A prepared server (the lab's): the role's own files only, which are left out.
    (pdns_root / "etc/powerdns/pdns.d/bind.conf").unlink()
    (pdns_root / "etc/powerdns/pdns.d/provisioner.conf").write_text("launch=gsqlite3\n")
    (pdns_root / "etc/powerdns/pdns.d/provisioner-api-key.conf").write_text("api-key=x\n")
    assert _backends(pdns_root)["foreign"] == []


@pytest.mark.parametrize("where", ["etc/powerdns/named.conf", "var/lib/powerdns/supermaster.conf"])
def test_a_bind_backend_with_zones_is_foreign(pdns_root, where):
    # The office's zone in named.conf itself, or one PowerDNS wrote to the file it includes.
    with (pdns_root / where).open("a") as f:
        f.write(OFFICE_ZONE)
    assert _foreign(pdns_root) == [("/etc/powerdns/pdns.d/bind.conf", 2, "launch+=bind")]
    assert _backends(pdns_root)["bind_zones"] == 1


def test_any_other_backend_is_foreign_and_only_its_launch_line_is_shown(pdns_root):
    (pdns_root / "etc/powerdns/pdns.d/gmysql.conf").write_text(
        "# the office's zones\nlaunch+=gmysql\ngmysql-host=127.0.0.1\ngmysql-password=s3cret-db-password\n")
    pdns_conf = pdns_root / "etc/powerdns/pdns.conf"
    pdns_conf.write_text(pdns_conf.read_text().replace("launch=\n", "launch = bind, gpgsql:second  # two\n"))
    (pdns_root / "etc/powerdns/pdns.d/zz-more.conf").write_text("launch+=gsqlite3\n")  # ours: fine
    assert _foreign(pdns_root) == [("/etc/powerdns/pdns.conf", 3, "launch = bind, gpgsql:second  # two"),
                                   ("/etc/powerdns/pdns.d/gmysql.conf", 2, "launch+=gmysql")]
    assert "s3cret" not in json.dumps(_backends(pdns_root))


def test_host_ns_checks_the_backends_before_it_changes_anything():
    configure = yaml.safe_load((ROLES / "host_ns" / "tasks" / "configure.yml").read_text())
    names = [t["name"] for t in configure]
    check = names.index("Refuse a server whose zones another backend holds")
    assert configure[check]["ansible.builtin.import_tasks"] == "backends.yml"
    # Before the first task that changes the server (the asserts above it change nothing).
    assert all("ansible.builtin.assert" in t for t in configure[:check])
    read = _tasks(ROLES / "host_ns" / "tasks" / "backends.yml")["Read the backends PowerDNS launches now"]
    assert read["check_mode"] is False and read["changed_when"] is False
    assert read["ansible.builtin.script"]["cmd"].startswith("pdns-backends ")


def test_the_refusal_names_the_file_and_its_launch_line(pdns_root, tmp_path):
    """The role's assert, run on the controller with what the script found on an office's server."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.skip("ansible-playbook is not installed beside this interpreter")
    assert_task = _tasks(ROLES / "host_ns" / "tasks" / "backends.yml")["Refuse a server whose zones are in another backend"]

    def run(found):
        playbook = tmp_path / "refuse.yml"
        playbook.write_text(yaml.safe_dump([{
            "hosts": "localhost", "gather_facts": False, "connection": "local",
            "vars_files": [str(ROLES / "host_ns" / "defaults" / "main.yml")], "tasks": [assert_task]}]))
        extra = tmp_path / "found.json"
        extra.write_text(json.dumps({"host_ns__backends": {"stdout": json.dumps(found)}}))
        return subprocess.run([str(playbook_bin), "-i", "localhost,", "-e", f"@{extra}", str(playbook)],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"})

    assert run(_backends(pdns_root)).returncode == 0  # Debian's example: passes
    with (pdns_root / "etc/powerdns/named.conf").open("a") as f:
        f.write(OFFICE_ZONE)
    refused = run(_backends(pdns_root))
    assert refused.returncode != 0
    message = " ".join(refused.stdout.split())
    assert "/etc/powerdns/pdns.d/bind.conf line 2 `launch+=bind`" in message, refused.stdout
    assert "launch=gsqlite3 in /etc/powerdns/pdns.d/provisioner.conf" in message
    assert "1 zone(s) in /etc/powerdns/named.conf" in message


def test_the_role_refuses_a_secondary_api_it_cannot_listen_on(tmp_path):
    copy = tmp_path / "inventory"
    shutil.copytree(LAB, copy)
    hosts = copy / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("pdns_api_url: http://10.77.0.12:8081/api/v1",
                                               "pdns_api_url: http://ns2.lab:8081/api/v1"))
    failed, out = _run_role_asserts(copy, tmp_path)
    assert failed["ns2"] and not failed["ns1"], out
    assert "ns2: a secondary with pdns_api_url needs it with an IPv4 address" in out
