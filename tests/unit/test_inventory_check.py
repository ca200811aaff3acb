"""`provision inventory check`: the example and the lab pass; a broken copy names each problem."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.config import REPO_ROOT
from provisioner.inventory import load_inventory
from provisioner.inventory_check import check_inventory
from provisioner.lab import topology

EXAMPLE = REPO_ROOT / "inventory" / "example"
LAB = REPO_ROOT / "inventory" / "lab"


@pytest.fixture
def copy(tmp_path):
    """The example inventory in tmp_path, its key files real (mode 600) so the full check passes."""
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    keys = tmp_path / "etc"
    keys.mkdir()
    # The API key as host_ns wants it: 16+ characters, no blanks inside.
    for name, content in (("id_ed25519", "not a real key\n"), ("pdns-api-key", "not-a-real-key-but-long-enough\n")):
        (keys / name).write_text(content)
        (keys / name).chmod(0o600)
    for file in (inventory / "hosts.yml", inventory / "group_vars" / "nameservers.yml"):
        file.write_text(file.read_text().replace("/etc/provisioner/id_ed25519", str(keys / "id_ed25519"))
                        .replace("/etc/provisioner/pdns-api-key", str(keys / "pdns-api-key")))
    return inventory


def edit(file, old, new):
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    file.write_text(text.replace(old, new))


def line_of(file, marker):
    return next(n for n, line in enumerate(file.read_text().splitlines(), 1) if marker in line)


def found(report, subject, key):
    return [p for p in report.problems if p.subject == subject and p.key == key]


def test_the_example_passes_offline():
    report = check_inventory(EXAMPLE, offline=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.warnings == []
    assert report.groups == {"nameservers": ["ns1.example.go.id", "ns2.example.go.id"],
                             "web": ["web1.example.go.id", "web2.example.go.id"],
                             "db": ["db1.example.go.id", "db2.example.go.id"]}
    assert report.primary == "ns1.example.go.id"
    assert report.pools == {"web1.example.go.id": "198.51.100.100-198.51.100.149 (50)",
                            "web2.example.go.id": "203.0.113.65-203.0.113.126 (62)"}


def test_the_example_uses_documentation_addresses_and_every_host_has_one():
    inventory = load_inventory(EXAMPLE)
    for host in inventory.hosts.values():
        assert host.address.startswith("192.0.2."), host.name
        assert host.address != host.name
    for web in inventory.group("web"):
        assert web.vars["public_ip"].startswith(("198.51.100.", "203.0.113."))
        assert inventory.public_pool(web)  # the toolkit reads the pool the check accepted
    assert inventory.pdns_api() == ("http://192.0.2.11:8081/api/v1", Path("/etc/provisioner/pdns-api-key"))


def test_the_example_names_its_absent_key_files_without_offline():
    # /etc/provisioner/ belongs to a controller, not to this machine.
    report = check_inventory(EXAMPLE)
    assert {(p.subject, p.key) for p in report.problems} == {
        ("group nameservers", "pdns_api_key_file"), ("group all", "ansible_ssh_private_key_file")}
    api_key = found(report, "group nameservers", "pdns_api_key_file")[0]
    assert api_key.file.endswith("group_vars/nameservers.yml")
    assert api_key.line == line_of(EXAMPLE / "group_vars" / "nameservers.yml", "pdns_api_key_file:")
    assert "does not exist on this machine" in api_key.rule


def test_a_copy_with_real_key_files_passes_the_full_check(copy):
    report = check_inventory(copy)
    assert report.ok, [str(p) for p in report.problems]
    assert not report.offline


def test_the_lab_inventory_passes():
    report = check_inventory(LAB, offline=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.groups["acme"] == ["ca1"]
    assert report.groups["backup"] == ["backup1"]
    assert sorted(report.groups["web"]) == ["web1", "web2"] and sorted(report.groups["db"]) == ["db1", "db2"]
    # The lab routes its dedicated block onto the bridge, apart from the web servers' /28,
    # and each web server allocates from its own part of it.
    inventory = load_inventory(LAB)
    for name in ("web1", "web2"):
        assert inventory.host(name).vars["public_routed_networks"] == [str(topology.DEDICATED_POOL)]
    assert report.pools == {"web1": "203.0.113.128-203.0.113.191 (64)", "web2": "203.0.113.192-203.0.113.254 (63)"}


HOSTS = "hosts.yml"
NS_VARS = "group_vars/nameservers.yml"

# (file, old text, new text, subject, key, words of the rule, marker of the line reported)
CASES = {
    "ansible_host missing": (HOSTS, "ansible_host: 192.0.2.21\n", "", "web1.example.go.id", "ansible_host",
                             "missing", "web1.example.go.id:"),
    "ansible_host not an address": (HOSTS, "ansible_host: 192.0.2.31", "ansible_host: db1.internal",
                                    "db1.example.go.id", "ansible_host", "not an IP address", "db1.internal"),
    "ansible_host twice": (HOSTS, "ansible_host: 192.0.2.32", "ansible_host: 192.0.2.31", "db2.example.go.id",
                           "ansible_host", "also the address of db1.example.go.id",
                           "db2.example.go.id:\n          ansible_host"),
    "public_ip missing": (HOSTS, "public_ip: 198.51.100.10\n", "", "web1.example.go.id", "public_ip", "missing",
                          "web1.example.go.id:"),
    "public_ip not an address": (HOSTS, "public_ip: 198.51.100.10", "public_ip: 198.51.100.300",
                                 "web1.example.go.id", "public_ip", "not an IP address", "198.51.100.300"),
    "public_ip is the broadcast": (HOSTS, "public_ip: 198.51.100.10", "public_ip: 198.51.100.255",
                                   "web1.example.go.id", "public_ip", "not a host address of 198.51.100.0/24",
                                   "198.51.100.255"),
    "public_ip shared twice": (HOSTS, "public_ip: 198.51.100.11", "public_ip: 198.51.100.10", "web2.example.go.id",
                               "public_ip", "also the shared address of web1.example.go.id",
                               "web2.example.go.id:\n          ansible_host: 192.0.2.22\n          public_ip:"),
    "public_prefix missing": (HOSTS, "public_prefix: 24\n          # Dedicated", "# Dedicated", "web1.example.go.id",
                              "public_prefix", "missing", "web1.example.go.id:"),
    "public_prefix wrong": (HOSTS, "public_prefix: 24\n          # Dedicated", "public_prefix: 33\n          #",
                            "web1.example.go.id", "public_prefix", "not a prefix length", "public_prefix: 33"),
    "pool missing": (HOSTS, "          public_ip_pool: 198.51.100.100-198.51.100.149\n", "", "web1.example.go.id",
                     "public_ip_pool", "missing", "web1.example.go.id:"),
    "pool malformed": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.100.100..198.51.100.149",
                       "web1.example.go.id", "public_ip_pool", "not first-last", "198.51.100.100.."),
    "pool reversed": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.100.149-198.51.100.100",
                      "web1.example.go.id", "public_ip_pool", "reversed", "198.51.100.149-"),
    "pools overlap": (HOSTS, "203.0.113.65-203.0.113.126", "198.51.100.140-198.51.100.160", "web2.example.go.id",
                      "public_ip_pool", "overlaps the pool of web1.example.go.id", "198.51.100.140-"),
    "pool holds a shared address": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.100.5-198.51.100.20",
                                    "web1.example.go.id", "public_ip_pool",
                                    "contains 198.51.100.11, the shared address of web2.example.go.id",
                                    "198.51.100.5-"),
    "pool holds its own shared address": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.100.5-198.51.100.10",
                                          "web1.example.go.id", "public_ip_pool",
                                          "contains 198.51.100.10, the shared address of this host",
                                          "198.51.100.5-"),
    "pool holds a management address": (HOSTS, "203.0.113.65-203.0.113.126", "192.0.2.20-192.0.2.40",
                                        "web2.example.go.id", "public_ip_pool",
                                        "contains 192.0.2.31, the ansible_host of db1.example.go.id",
                                        "192.0.2.20-"),
    "pool outside the network": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.101.1-198.51.101.9",
                                 "web1.example.go.id", "public_ip_pool",
                                 "outside the host's public network (198.51.100.0/24)", "198.51.101.1-"),
    "pool outside without the routed block": (HOSTS, "          public_routed_networks: [203.0.113.64/26]\n", "",
                                              "web2.example.go.id", "public_ip_pool",
                                              "outside the host's public network", "203.0.113.65-"),
    "pool holds the broadcast": (HOSTS, "198.51.100.100-198.51.100.149", "198.51.100.200-198.51.100.255",
                                 "web1.example.go.id", "public_ip_pool",
                                 "contains 198.51.100.255, the broadcast address", "198.51.100.200-"),
    "routed network malformed": (HOSTS, "[203.0.113.64/26]", "[203.0.113.64/25]", "web2.example.go.id",
                                 "public_routed_networks", "not a network", "203.0.113.64/25"),
    "no primary": (HOSTS, "pdns_role: primary", "pdns_role: secondary", "group nameservers", "pdns_role",
                   "no name server has pdns_role: primary", "    nameservers:"),
    "two primaries": (HOSTS, "pdns_role: secondary", "pdns_role: primary", "ns2.example.go.id", "pdns_role",
                      "ns1.example.go.id is already the primary",
                      "ns2.example.go.id:\n          ansible_host: 192.0.2.12\n          pdns_role"),
    "role unknown": (HOSTS, "pdns_role: secondary", "pdns_role: slave", "ns2.example.go.id", "pdns_role",
                     "must be primary or secondary", "pdns_role: slave"),
    "api url missing": (HOSTS, "          pdns_api_url: http://192.0.2.11:8081/api/v1\n", "", "ns1.example.go.id",
                        "pdns_api_url", "missing on the primary", "ns1.example.go.id:"),
    "api url without /api/v1": (HOSTS, "http://192.0.2.11:8081/api/v1", "http://192.0.2.11:8081/",
                                "ns1.example.go.id", "pdns_api_url", "not /api/v1", "pdns_api_url:"),
    "api url scheme": (HOSTS, "http://192.0.2.11:8081/api/v1", "ftp://192.0.2.11/api/v1", "ns1.example.go.id",
                       "pdns_api_url", "the scheme is 'ftp'", "pdns_api_url:"),
    "api url with a password": (HOSTS, "http://192.0.2.11:8081/api/v1", "http://admin:s3cret@192.0.2.11/api/v1",
                                "ns1.example.go.id", "pdns_api_url", "no user or password", "pdns_api_url:"),
    "api url port": (HOSTS, "http://192.0.2.11:8081/api/v1", "http://192.0.2.11:99999/api/v1",
                     "ns1.example.go.id", "pdns_api_url", "port", "pdns_api_url:"),
    "api url with a host name": (HOSTS, "http://192.0.2.11:8081/api/v1", "http://ns1.internal:8081/api/v1",
                                 "ns1.example.go.id", "pdns_api_url", "not an IPv4 address", "pdns_api_url:"),
    "api allow-from missing": (HOSTS, "          pdns_api_allow_from: [192.0.2.5/32]\n", "", "ns1.example.go.id",
                               "pdns_api_allow_from", "missing on the primary", "ns1.example.go.id:"),
    "api allow-from empty": (HOSTS, "[192.0.2.5/32]", "[]", "ns1.example.go.id", "pdns_api_allow_from",
                             "non-empty list", "pdns_api_allow_from:"),
    "api allow-from not a network": (HOSTS, "[192.0.2.5/32]", "[controller.internal]", "ns1.example.go.id",
                                     "pdns_api_allow_from", "'controller.internal' is not a network",
                                     "pdns_api_allow_from:"),
    "zones missing": (NS_VARS, "dns_zones:\n  - example.go.id\n", "", "ns1.example.go.id", "dns_zones", "missing",
                      None),
    "zones not a list": (NS_VARS, "dns_zones:\n  - example.go.id\n", "dns_zones: example.go.id\n",
                         "group nameservers", "dns_zones", "non-empty list", "dns_zones:"),
    "zone not a name": (NS_VARS, "  - example.go.id\n", "  - Example.go.id.\n", "group nameservers", "dns_zones",
                        "'Example.go.id.' is not a zone name", "dns_zones:"),
    "public address not IPv4": (HOSTS, "pdns_public_address: 203.0.113.53", "pdns_public_address: 2001:db8::53",
                                "ns2.example.go.id", "pdns_public_address", "not an IPv4 address",
                                "pdns_public_address: 2001"),
    "public address in a pool": (HOSTS, "pdns_public_address: 203.0.113.53", "pdns_public_address: 203.0.113.70",
                                 "ns2.example.go.id", "pdns_public_address",
                                 "in the public_ip_pool of web2.example.go.id", "pdns_public_address: 203.0.113.70"),
    "public address shared by web": (HOSTS, "pdns_public_address: 198.51.100.53", "pdns_public_address: 198.51.100.10",
                                     "ns1.example.go.id", "pdns_public_address",
                                     "the shared address of web1.example.go.id", "pdns_public_address: 198.51"),
    "public address twice": (HOSTS, "pdns_public_address: 203.0.113.53", "pdns_public_address: 198.51.100.53",
                             "ns2.example.go.id", "pdns_public_address", "also the public address of ns1",
                             "pdns_role: secondary\n          pdns_public_address: 198.51.100.53"),
    "name server on IPv6": (HOSTS, "ansible_host: 192.0.2.12", "ansible_host: 2001:db8::12", "ns2.example.go.id",
                            "ansible_host", "not IPv4", "ansible_host: 2001"),
    "ns name not a name": (HOSTS, "          pdns_public_address: 203.0.113.53\n",
                           "          pdns_public_address: 203.0.113.53\n          pdns_ns_name: ns2\n",
                           "ns2.example.go.id", "pdns_ns_name", "not a full host name", "pdns_ns_name:"),
    "local address wrong": (HOSTS, "          pdns_public_address: 203.0.113.53\n",
                            "          pdns_public_address: 203.0.113.53\n          pdns_local_address: any\n",
                            "ns2.example.go.id", "pdns_local_address", "not an IP address", "pdns_local_address:"),
    "database on IPv6": (HOSTS, "ansible_host: 192.0.2.32", "ansible_host: 2001:db8::32", "db2.example.go.id",
                         "ansible_host", "binds MariaDB to it", "ansible_host: 2001"),
    "database bind address wrong": (HOSTS, "ansible_host: 192.0.2.32\n",
                                    "ansible_host: 192.0.2.32\n          mariadb_bind_address: localhost\n",
                                    "db2.example.go.id", "mariadb_bind_address", "not an IPv4 address",
                                    "mariadb_bind_address:"),
    "api key file missing": (NS_VARS, "pdns_api_key_file:", "pdns_api_key_file_old:", "ns1.example.go.id",
                             "pdns_api_key_file", "missing on the primary", None),
    "api key file relative": (NS_VARS, "pdns_api_key_file: /", "pdns_api_key_file: ", "group nameservers",
                              "pdns_api_key_file", "is relative", "pdns_api_key_file:"),
    "group db missing": (HOSTS, "    db:\n      hosts:\n        db1.example.go.id:\n          ansible_host: 192.0.2.31\n"
                         "        db2.example.go.id:\n          ansible_host: 192.0.2.32\n", "", "group db",
                         "all.children", "'db' is missing", "  children:"),
    "group web empty": (HOSTS, "    web:\n      hosts:\n", "    web:\n      hosts:\n    retired:\n      hosts:\n",
                        "group web", "all.children", "'web' has no hosts", "    web:"),
    "nested groups": (HOSTS, "    db:\n      hosts:\n", "    db:\n      children:\n        old_db:\n"
                      "          hosts: {}\n      hosts:\n", "group db", "children", "nested groups",
                      "      children:"),
    "duplicate key": (HOSTS, "public_prefix: 24\n          # Dedicated",
                      "public_prefix: 24\n          public_prefix: 25\n          # Dedicated", "(file)",
                      "all.children.web.hosts.web1.example.go.id.public_prefix", "duplicate key", "public_prefix: 25"),
    "not YAML": (HOSTS, "pdns_role: secondary", "pdns_role: [secondary", "(file)", None, "not valid YAML", None),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_broken_copy_names_the_key_and_the_rule(copy, case):
    file, old, new, subject, key, rule, marker = CASES[case]
    edit(copy / file, old, new)
    report = check_inventory(copy)
    matching = [p for p in report.problems if p.subject == subject and (key is None or p.key == key)]
    assert matching, [str(p) for p in report.problems]
    assert any(rule in p.rule for p in matching), [str(p) for p in matching]
    if marker is not None:
        problem = next(p for p in matching if rule in p.rule)
        text = (copy / file).read_text()
        assert problem.file == str(copy / file)
        # The line where the marker's last line starts: the key's own line.
        assert problem.line == text[:text.index(marker)].count("\n") + 1 + marker.count("\n")


def _key_file(copy, name):
    return copy.parent / "etc" / name


def test_a_key_file_open_to_others_is_named_with_its_mode(copy):
    _key_file(copy, "pdns-api-key").chmod(0o644)
    problems = found(check_inventory(copy), "group nameservers", "pdns_api_key_file")
    assert len(problems) == 1 and "mode 0o644" in problems[0].rule and "chmod 600" in problems[0].rule
    assert problems[0].line == line_of(copy / NS_VARS, "pdns_api_key_file:")


def test_a_missing_ssh_key_is_named_once_for_the_group_that_sets_it(copy):
    _key_file(copy, "id_ed25519").unlink()
    problems = found(check_inventory(copy), "group all", "ansible_ssh_private_key_file")
    assert len(problems) == 1 and "does not exist on this machine" in problems[0].rule
    assert problems[0].line == line_of(copy / HOSTS, "ansible_ssh_private_key_file:")
    # --offline does not look at the files.
    assert check_inventory(copy, offline=True).ok


def test_a_key_file_that_is_a_directory_or_empty(copy):
    key = _key_file(copy, "pdns-api-key")
    key.write_text("")
    assert "is empty" in found(check_inventory(copy), "group nameservers", "pdns_api_key_file")[0].rule
    key.unlink()
    key.mkdir(mode=0o700)
    assert "not a regular file" in found(check_inventory(copy), "group nameservers", "pdns_api_key_file")[0].rule


def test_an_api_key_too_short_for_host_prepare(copy):
    # host_ns refuses a key under 16 characters; the key is never echoed.
    _key_file(copy, "pdns-api-key").write_text("short-key\n")
    problems = found(check_inventory(copy), "group nameservers", "pdns_api_key_file")
    assert len(problems) == 1 and "a key of 9 characters" in problems[0].rule
    assert "at least 16" in problems[0].rule and "short-key" not in problems[0].rule


@pytest.mark.parametrize("content, rule", [
    # 19 bytes, but host prepare strips the blanks and passes a 9-character key.
    ("short-key\n\n\n\n\n\n\n\n\n\n", "a key of 9 characters"),
    ("   short-key        \n", "a key of 9 characters"),
    # Long enough, but host_ns refuses blanks or control characters inside the key.
    ("k3y with a space in it 0123\n", "blanks or control characters"),
    ("k3y-with-a-tab\tinside-0123\n", "blanks or control characters"),
    ("\n\n\n", "is empty"),
])
def test_the_api_key_is_held_to_host_prepares_rule_not_its_byte_count(copy, content, rule):
    key = _key_file(copy, "pdns-api-key")
    key.write_text(content)
    problems = found(check_inventory(copy), "group nameservers", "pdns_api_key_file")
    assert len(problems) == 1 and rule in problems[0].rule, [str(p) for p in problems]
    # Neither the key nor a piece of it is ever shown.
    for piece in ("short-key", "k3y", "space in it", "inside-0123"):
        assert piece not in problems[0].rule and piece not in json.dumps(check_inventory(copy).as_dict())


def test_a_key_host_prepare_accepts_passes_with_its_surrounding_blanks(copy):
    _key_file(copy, "pdns-api-key").write_text("\n  k3y-of-17-chars!\n\n")  # 17 characters once stripped
    assert not found_any(check_inventory(copy), "pdns_api_key_file")
    _key_file(copy, "pdns-api-key").write_text("0123456789abcdef\n")  # exactly 16
    assert not found_any(check_inventory(copy), "pdns_api_key_file")


def found_any(report, key):
    return [str(p) for p in report.problems if p.key == key]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file(copy):
    _key_file(copy, "pdns-api-key").chmod(0o000)
    assert "cannot be read" in found(check_inventory(copy), "group nameservers", "pdns_api_key_file")[0].rule


def test_every_problem_at_once(copy):
    for case in ("ansible_host missing", "pools overlap", "two primaries", "api url scheme",
                 "public_prefix wrong", "group db missing"):
        file, old, new, *_ = CASES[case]
        edit(copy / file, old, new)
    _key_file(copy, "pdns-api-key").chmod(0o640)
    report = check_inventory(copy)
    keys = {(p.subject, p.key) for p in report.problems}
    assert keys == {("web1.example.go.id", "ansible_host"), ("web2.example.go.id", "public_ip_pool"),
                    ("ns2.example.go.id", "pdns_role"), ("group db", "all.children"),
                    ("web1.example.go.id", "public_prefix")}, \
        [str(p) for p in report.problems]
    # Once ns2 is a second primary there is no single primary whose URL or key file to judge;
    # with one primary again, those two are reported as well.
    edit(copy / HOSTS, "192.0.2.12\n          pdns_role: primary", "192.0.2.12\n          pdns_role: secondary")
    keys = {(p.subject, p.key) for p in check_inventory(copy).problems}
    assert {("ns1.example.go.id", "pdns_api_url"), ("group nameservers", "pdns_api_key_file")} <= keys
    assert ("web1.example.go.id", "ansible_host") in keys and ("web2.example.go.id", "public_ip_pool") in keys


def test_a_secret_in_the_url_is_never_echoed(copy):
    edit(copy / HOSTS, "http://192.0.2.11:8081/api/v1", "http://admin:s3cret@192.0.2.11/api/v1")
    report = check_inventory(copy)
    assert "s3cret" not in json.dumps(report.as_dict()) and "s3cret" not in report.summary()


def test_hosts_file_missing_and_ignored_folders(tmp_path, copy):
    report = check_inventory(tmp_path / "nothing")
    assert not report.ok and "does not exist" in report.problems[0].rule
    (copy / "host_vars").mkdir()
    (copy / "group_vars" / "web").mkdir()
    report = check_inventory(copy)
    assert report.ok
    assert {w.key for w in report.warnings} == {"host_vars", "group_vars"}


def test_the_check_sees_the_variables_the_toolkit_reads_and_where_they_are_written(copy):
    # web1 takes its prefix from group_vars/web.yml (web2 keeps its own): merged as load_inventory merges.
    edit(copy / HOSTS, "public_prefix: 24\n          # Dedicated", "# Dedicated")
    (copy / "group_vars" / "web.yml").write_text("# web servers\npublic_prefix: 25\n")
    assert load_inventory(copy).host("web1.example.go.id").vars["public_prefix"] == 25
    report = check_inventory(copy)
    problem = found(report, "web1.example.go.id", "public_ip_pool")[0]
    assert "outside the host's public network (198.51.100.0/25)" in problem.rule
    assert not found(report, "web2.example.go.id", "public_ip_pool")
    (copy / "group_vars" / "web.yml").write_text("# web servers\npublic_prefix: 33\n")
    problem = found(check_inventory(copy), "web1.example.go.id", "public_prefix")[0]
    assert (problem.file, problem.line) == (str(copy / "group_vars" / "web.yml"), 2)


# -- the command ---------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["inventory", "check", *map(str, args)], catch_exceptions=False)


def test_cli_clean_prints_one_summary_line():
    result = run(EXAMPLE, "--offline")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "ok: 6 hosts in 3 groups (nameservers 2, web 2, db 2)" in lines[0]
    assert "key files not checked (--offline)" in lines[0]


def test_cli_problems_exit_2_with_file_line_host_key(copy):
    edit(copy / HOSTS, "ansible_host: 192.0.2.21\n", "")
    result = run(copy)
    assert result.exit_code == 2
    line = line_of(copy / HOSTS, "web1.example.go.id:")
    assert f"{copy / HOSTS}:{line}: web1.example.go.id: ansible_host: missing" in result.output
    assert "1 problem(s)" in result.output


def test_cli_json(copy):
    edit(copy / HOSTS, "pdns_role: secondary", "pdns_role: primary")
    result = run(copy, "--json")
    assert result.exit_code == 2
    data = json.loads(result.output)
    assert data["ok"] is False and data["primary"] is None
    assert [(p["subject"], p["key"]) for p in data["problems"]] == [("ns2.example.go.id", "pdns_role")]
    text = (copy / HOSTS).read_text()
    assert data["problems"][0]["line"] == text[:text.index("pdns_role: primary\n          pdns_public_address")].count("\n") + 1


def test_cli_default_path_is_the_configured_inventory(tmp_path, monkeypatch):
    config = tmp_path / "provisioner.yaml"
    config.write_text(yaml.safe_dump({"hosting": {"inventory": str(EXAMPLE)}}))
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    result = run("--offline", "--config", config)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{EXAMPLE}: ok:")


def test_a_secondary_may_serve_the_api_and_is_then_held_to_the_primarys_rules(copy):
    hosts = copy / "hosts.yml"
    secondary = "ns2.example.go.id"
    edit(hosts, "          pdns_role: secondary\n",
         "          pdns_role: secondary\n          pdns_api_url: http://192.0.2.12:8081/api/v1\n"
         "          pdns_api_allow_from: [192.0.2.6/32]\n")
    assert check_inventory(copy).ok
    assert [(h.name, url) for h, url in load_inventory(copy).secondary_apis()] == [
        (secondary, "http://192.0.2.12:8081/api/v1")]
    edit(hosts, "          pdns_api_allow_from: [192.0.2.6/32]\n", "")
    edit(hosts, "http://192.0.2.12:8081/api/v1", "http://ns2.example.go.id:8081/api/v1")
    report = check_inventory(copy)
    (url,) = found(report, secondary, "pdns_api_url")
    assert "is not an IPv4 address" in url.rule and url.line == line_of(hosts, "ns2.example.go.id:8081")
    (allow,) = found(report, secondary, "pdns_api_allow_from")
    assert allow.rule.startswith("missing on a secondary with pdns_api_url")
