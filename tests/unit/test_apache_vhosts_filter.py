"""The web_site role's reading of `apache2ctl -S` for duplicate ServerNames."""

import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[2] / "playbooks/roles/web_site/filter_plugins/apache_vhosts.py"
spec = importlib.util.spec_from_file_location("apache_vhosts", PLUGIN)
apache_vhosts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(apache_vhosts)

DUMP = """\
VirtualHost configuration:
203.0.113.10:80        is a NameVirtualHost
         default server a.example.go.id (/etc/apache2/sites-enabled/a.conf:3)
         port 80 namevhost a.example.go.id (/etc/apache2/sites-enabled/a.conf:3)
         port 80 namevhost b.example.go.id (/etc/apache2/sites-enabled/b.conf:3)
                 alias www.b.example.go.id
         port 80 namevhost A.example.go.id (/etc/apache2/sites-enabled/rt-hand.conf:1)
203.0.113.10:443       a.example.go.id (/etc/apache2/sites-enabled/a.conf:10)
203.0.113.101:80       c.example.go.id (/etc/apache2/sites-enabled/c.conf:3)
*:80                   www.b.example.go.id (/etc/apache2/sites-enabled/000-default.conf:1)
ServerRoot: "/etc/apache2"
Main DocumentRoot: "/var/www/html"
"""


def test_reads_names_aliases_and_single_vhosts():
    names = {(a, p, n) for a, p, n, _ in apache_vhosts.vhost_names(DUMP)}
    assert ("203.0.113.10", "80", "www.b.example.go.id") in names
    assert ("203.0.113.10", "443", "a.example.go.id") in names
    assert ("203.0.113.101", "80", "c.example.go.id") in names
    assert ("*", "80", "www.b.example.go.id") in names


def test_same_name_same_address_and_port_is_a_duplicate_case_insensitively():
    found = apache_vhosts.apache_duplicate_names(DUMP)
    assert any(f.startswith("a.example.go.id on 203.0.113.10:80") for f in found)
    # The same name on another port (the TLS vhost) is not a duplicate.
    assert not any("443" in f for f in found)


def test_a_wildcard_address_overlaps_every_address_on_its_port():
    found = apache_vhosts.apache_duplicate_names(DUMP, ["www.b.example.go.id"])
    assert found == ["www.b.example.go.id on 203.0.113.10:80 and *:80 "
                     "(/etc/apache2/sites-enabled/b.conf:3; /etc/apache2/sites-enabled/000-default.conf:1)"]


def test_only_the_given_names_are_reported():
    assert apache_vhosts.apache_duplicate_names(DUMP, ["c.example.go.id", "b.example.go.id"]) == []
    assert apache_vhosts.apache_duplicate_names("VirtualHost configuration:\n") == []
