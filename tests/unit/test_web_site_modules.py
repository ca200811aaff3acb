"""The web_site role's own modules and filters, run against a temporary directory (no host)."""

import grp
import importlib.util
import os
import pwd
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parents[2] / "playbooks/roles/web_site"


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROLE / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


files = _load("library/web_site_files.py")
accounts = _load("library/web_site_accounts.py")
probe = _load("library/web_site_probe.py")
host = _load("library/web_site_host.py")
checks = _load("filter_plugins/web_site_checks.py")


def _me(owner, group):
    # Every owner is the test's own user: the module's owner handling without root.
    return os.getuid(), os.getgid()


# --- web_site_host -------------------------------------------------------------


def test_host_facts_give_what_the_role_compares_its_wanted_settings_with(tmp_path):
    import hashlib

    import yaml

    role_vars = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    dropin = tmp_path / "provisioner.conf"
    dropin.write_text(role_vars["web_site__fpm_dropin"])
    os.chmod(dropin, 0o644)
    facts = host.file_facts(str(dropin))
    # Ansible's sha1 filter is the SHA-1 of the text's UTF-8 bytes: the role compares the two.
    assert facts["sha1"] == hashlib.sha1(role_vars["web_site__fpm_dropin"].encode()).hexdigest()
    assert (facts["mode"], facts["owner"]) == ("0644", os.getuid())
    assert host.file_facts(str(tmp_path / "missing")) == {}
    link = tmp_path / "link.conf"
    link.symlink_to(dropin)
    assert host.file_facts(str(link))["sha1"] is None  # a link is never taken for the file

    default = tmp_path / "php-fpm8.2"
    default.write_text("# comment\n" + role_vars["web_site__fpm_umask_line"] + "\nOTHER=1\n")
    assert host.umask_lines(str(default)) == [role_vars["web_site__fpm_umask_line"]]
    default.write_text("  umask 0022\numask 0027\n")
    assert host.umask_lines(str(default)) == ["  umask 0022", "umask 0027"]
    assert host.umask_lines(str(tmp_path / "none")) is None
    assert host.master_umask("0.0-no-such") == ""
    # Only a root-owned directory counts (the role makes it root:root 0755).
    assert host.dir_mode(str(tmp_path)) == ("%04o" % (tmp_path.stat().st_mode & 0o7777) if os.getuid() == 0
                                            and tmp_path.stat().st_gid == 0 else None)
    assert host.dir_mode(str(tmp_path / "none")) is None



def test_host_facts_name_the_addresses_of_the_enabled_vhosts_the_role_wrote(tmp_path):
    available, enabled = tmp_path / "sites-available", tmp_path / "sites-enabled"
    available.mkdir()
    enabled.mkdir()
    vhost = ("# Managed by provisioner (web_site role); local changes are overwritten.\n"
             "<VirtualHost {0}:80>\n</VirtualHost>\n<VirtualHost {0}:443>\n</VirtualHost>\n")
    (available / "a.example.go.id.conf").write_text(vhost.format("203.0.113.10"))
    (enabled / "a.example.go.id.conf").symlink_to("../sites-available/a.example.go.id.conf")
    (enabled / "b.example.go.id.conf").write_text(vhost.format("203.0.113.11"))
    # Not the role's: an office's own vhost, a link to nothing, a file not ending .conf.
    (enabled / "000-default.conf").write_text("<VirtualHost 203.0.113.99:80>\n</VirtualHost>\n")
    (enabled / "gone.conf").symlink_to("../sites-available/gone.conf")
    (enabled / "c.example.go.id.conf.bak").write_text(vhost.format("203.0.113.12"))
    assert host.managed_vhosts(str(enabled)) == {"a.example.go.id.conf": ["203.0.113.10"],
                                                 "b.example.go.id.conf": ["203.0.113.11"]}
    assert host.managed_vhosts(str(tmp_path / "none")) == {}


# --- web_site_files ------------------------------------------------------------


def test_files_are_written_linked_and_removed_once_then_nothing_changes(tmp_path):
    old = tmp_path / "old.conf"
    old.write_text("gone\n")
    wanted = [{"path": str(tmp_path / "a.conf"), "content": "A\n", "mode": "0644"},
              {"path": str(tmp_path / "k.key"), "content": "KEY\n", "mode": "0600"}]
    links = [{"path": str(tmp_path / "a-enabled.conf"), "src": "a.conf"}]
    changed, _ = files.converge(wanted, links, [str(old)], [], ids=_me)
    assert sorted(changed) == sorted([w["path"] for w in wanted] + [links[0]["path"], str(old)])
    assert (tmp_path / "a.conf").read_text() == "A\n"
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert os.readlink(tmp_path / "a-enabled.conf") == "a.conf"
    assert not old.exists()
    # No temporary file is left beside the written ones.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-enabled.conf", "a.conf", "k.key"]
    assert files.converge(wanted, links, [str(old)], [], ids=_me) == ([], [])


def test_a_changed_mode_or_content_is_rewritten_and_shown_as_a_diff(tmp_path):
    path = tmp_path / "v.conf"
    path.write_text("before\n")
    os.chmod(path, 0o666)
    changed, diffs = files.converge([{"path": str(path), "content": "before\n", "mode": "0644"}], [], [], [], ids=_me)
    assert changed == [str(path)] and path.stat().st_mode & 0o777 == 0o644
    changed, diffs = files.converge([{"path": str(path), "content": "after\n", "mode": "0644"}], [], [], [], ids=_me)
    assert diffs == [{"before_header": str(path), "after_header": str(path), "before": "before\n", "after": "after\n"}]
    assert path.read_text() == "after\n"


def test_check_mode_reports_and_changes_nothing(tmp_path):
    target = tmp_path / "sub"
    changed, _ = files.converge([{"path": str(target / "f.conf"), "content": "x"}],
                                [{"path": str(tmp_path / "l"), "src": "sub/f.conf"}], [],
                                [{"path": str(target), "mode": "0755"}], check=True, ids=_me)
    assert set(changed) == {str(target), str(target / "f.conf"), str(tmp_path / "l")}
    assert list(tmp_path.iterdir()) == []


def test_a_directory_where_a_file_or_link_belongs_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "d.conf").mkdir()
    first = tmp_path / "first.conf"
    with pytest.raises(files.Refused, match="is a directory"):
        files.converge([{"path": str(first), "content": "x"}, {"path": str(tmp_path / "d.conf"), "content": "y"}],
                       [], [], [], ids=_me)
    assert not first.exists()
    with pytest.raises(files.Refused, match="only files and links"):
        files.converge([], [], [str(tmp_path / "d.conf")], [], ids=_me)
    with pytest.raises(files.Refused, match="directory does not exist"):
        files.converge([{"path": str(tmp_path / "none" / "f"), "content": "x"}], [], [], [], ids=_me)


def test_a_link_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep\n")
    planted = tmp_path / "site.conf"
    planted.symlink_to(outside)
    files.converge([{"path": str(planted), "content": "vhost\n"}], [], [], [], ids=_me)
    assert outside.read_text() == "keep\n"
    assert not planted.is_symlink() and planted.read_text() == "vhost\n"


# --- web_site_accounts ---------------------------------------------------------


SITE = {"fqdn": "a.example.go.id", "user": "w-a", "home": "/srv/www/a.example.go.id",
        "docroot": "/srv/www/a.example.go.id/public", "logdir": "/var/log/apache2/sites/a.example.go.id"}


def test_directory_plan_keeps_the_modes_and_owners_of_the_isolation():
    plan = accounts.directory_plan([SITE], "/srv/www", "/var/log/apache2/sites")
    assert plan == [("/srv/www", "root", "root", 0o711), ("/var/log/apache2/sites", "root", "adm", 0o750),
                    (SITE["home"], "root", "w-a", 0o750), (SITE["docroot"], "w-a", "w-a", 0o750),
                    (SITE["home"] + "/tmp", "w-a", "w-a", 0o700), (SITE["home"] + "/sessions", "w-a", "w-a", 0o700),
                    (SITE["logdir"], "root", "adm", 0o750)]


def test_an_account_with_another_home_is_refused_for_every_site_at_once():
    other = {**SITE, "fqdn": "b.example.go.id", "user": "w-b", "home": "/srv/www/b.example.go.id"}
    passwd = {"w-a": ("/home/w-a", 1000, "/bin/bash"), "w-b": ("/srv/www/b.example.go.id", 1001, "/usr/sbin/nologin")}
    with pytest.raises(accounts.Refused, match="a.example.go.id: user w-a already exists with another home"):
        accounts.refuse_takeovers([SITE, other], passwd)
    accounts.refuse_takeovers([other], passwd)


def test_directories_are_made_and_set_without_following_a_planted_link(tmp_path):
    home = tmp_path / "home"
    accounts.ensure_directory(str(home / "public"), os.getuid(), os.getgid(), 0o750)
    assert accounts.directory_state(str(home / "public")) == (0o750, os.getuid(), os.getgid())
    assert home.stat().st_mode & 0o777 == 0o755
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir(mode=0o755)
    (home / "tmp").symlink_to(elsewhere)
    with pytest.raises(accounts.Refused, match="not a directory"):
        accounts.directory_state(str(home / "tmp"))
    with pytest.raises(OSError):
        accounts.ensure_directory(str(home / "tmp"), os.getuid(), os.getgid(), 0o700)
    assert elsewhere.stat().st_mode & 0o777 == 0o755


def test_the_placeholder_goes_only_where_there_is_no_index_and_never_through_a_link(tmp_path):
    docroot = tmp_path / "public"
    docroot.mkdir()
    assert not accounts.has_index(str(docroot))
    accounts.write_placeholder(str(docroot), "<h1>a</h1>\n", os.getuid(), os.getgid())
    index = docroot / "index.html"
    assert index.read_text() == "<h1>a</h1>\n" and index.stat().st_mode & 0o777 == 0o640
    assert accounts.has_index(str(docroot))
    with pytest.raises(FileExistsError):
        accounts.write_placeholder(str(docroot), "again", os.getuid(), os.getgid())
    assert index.read_text() == "<h1>a</h1>\n"
    other = tmp_path / "other"
    other.mkdir()
    target = tmp_path / "target"
    (other / "index.html").symlink_to(target)
    with pytest.raises(OSError):
        accounts.write_placeholder(str(other), "x", os.getuid(), os.getgid())
    assert not target.exists()


def test_accounts_without_a_password_are_read_by_name_only(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$x$y:1::::::\nnew:!:1::::::\nlocked:*:1::::::\nempty::1::::::\n")
    assert accounts.users_without_password(str(shadow)) == {"new", "locked", "empty"}


def test_the_permission_sweep_runs_as_the_site_user():
    argv = accounts.sweep_argv(SITE)
    assert argv[:4] == ["runuser", "-u", "w-a", "--"] and argv[4:6] == ["find", SITE["home"]]
    assert "-xdev" in argv and argv[-4:] == ["chmod", "g-w,o-rwx", "{}", "+"]


def test_removing_a_home_removes_a_planted_link_not_its_target(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data").write_text("keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / "link").symlink_to(target)
    assert accounts.remove_tree(str(home))
    assert not home.exists() and (target / "data").read_text() == "keep"
    link = tmp_path / "logdir"
    link.symlink_to(target)
    assert accounts.remove_tree(str(link))
    assert target.is_dir() and not accounts.remove_tree(str(link))


def _absent_site(tmp_path, name):
    return {"fqdn": f"{name}.example.go.id", "user": "w-" + name, "home": str(tmp_path / "www" / name),
            "logdir": str(tmp_path / "log" / name)}


def test_a_removal_takes_only_directories_owned_as_made_and_names_what_it_leaves(tmp_path, monkeypatch):
    me, my_group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    (tmp_path / "www").mkdir()
    (tmp_path / "log").mkdir()
    blocked, built, foreign = (_absent_site(tmp_path, n) for n in ("blocked", "built", "foreign"))
    Path(blocked["home"]).write_text("left by hand\n")  # a plain file where the home goes
    os.makedirs(Path(built["home"]) / "public")
    (Path(built["home"]) / "public" / "index.html").write_text("site\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Path(built["logdir"]).symlink_to(elsewhere)  # a link is never the site's, nor followed
    os.mkdir(foreign["home"])  # a directory, but not of the site's group
    # The built site's user is the test's own (whose home is elsewhere, so no userdel: the account
    # is not the site's); the other users do not exist. The site groups are faked: the test's own
    # group stands for the group a home made here carries, except for the foreign one.
    built["user"] = me
    monkeypatch.setattr(accounts, "groups", lambda: {me: (os.getgid(), set()), "w-blocked": (os.getgid(), set()),
                                                     "w-foreign": (os.getgid() + 1, set())})

    done, left = accounts.make_absent([blocked, built, foreign], check=True, tries=1)
    assert done == [f"remove {built['home']}"]
    assert Path(built["home"]).is_dir()  # check mode changes nothing
    done, left = accounts.make_absent([blocked, built, foreign], check=False, tries=1)
    assert done == [f"remove {built['home']}"]
    assert left == [f"left: {blocked['home']} is not the site's: a file owned by {me}",
                    f"left: {built['logdir']} is not the site's: a link",
                    f"left: {foreign['home']} is not the site's: a directory owned by {me}:{my_group}"]
    assert Path(blocked["home"]).read_text() == "left by hand\n"
    assert not os.path.lexists(built["home"])
    assert Path(built["logdir"]).is_symlink() and elsewhere.is_dir()
    assert Path(foreign["home"]).is_dir()


# --- web_site_probe ------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        host = self.headers.get("Host")
        if host == "tls.example.go.id":
            self.send_response(301)
            self.send_header("Location", f"https://{host}/")
        elif host == "ok.example.go.id":
            self.send_response(200)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probe_names_the_site_in_the_host_header_and_reads_redirects(web):
    def check(host, expect):
        return {"scheme": "http", "address": "127.0.0.1", "port": web, "host": host, "expect": expect}
    assert probe.answer(check("tls.example.go.id", "")) == "301 https://tls.example.go.id/"
    assert probe.answer(check("ok.example.go.id", "")) == "200"
    assert probe.probe([check("ok.example.go.id", "200"), check("tls.example.go.id", "301 https://tls.example.go.id/"),
                        check("no-site.default.invalid", "404")], retries=1) == []
    failed = probe.probe([check("ok.example.go.id", "503")], retries=2, delay=0)
    assert [(c["host"], c["got"]) for c in failed] == [("ok.example.go.id", "200")]


def test_probe_asks_again_only_the_sites_not_yet_answering():
    asked = []

    def ask(check, timeout):
        asked.append(check["host"])
        # b answers after its second question, as after a graceful reload.
        return "200" if check["host"] == "a" or asked.count("b") > 1 else "error: refused"
    checks = [{"host": "a", "expect": "200"}, {"host": "b", "expect": "200"}]
    assert probe.probe(checks, retries=3, delay=0, ask=ask) == []
    assert sorted(asked) == ["a", "b", "b"]


def test_probe_reports_an_address_that_does_not_answer():
    got = probe.answer({"scheme": "http", "address": "127.0.0.1", "port": 9, "host": "x.example.go.id"}, timeout=1)
    assert got.startswith("error: ")


# --- filters -------------------------------------------------------------------


GOOD = {**SITE, "state": "present", "php": True, "tls": False, "suspended": False, "rotate_password": False,
        "allow_exec": False, "php_version": "8.2", "pool": "a.example.go.id", "listen_ip": "203.0.113.10",
        "bandwidth_kbps": 0, "quota_mb": 2048}


def test_the_contract_accepts_a_good_item_and_names_every_broken_rule():
    assert checks.web_site_refusals([GOOD], "/srv/www", "/var/log/apache2/sites") == []
    bad = {**GOOD, "fqdn": "a b.example.go.id", "docroot": "/etc/apache2", "user": "Root", "listen_ip": "1.2.3.256",
           "tls": "yes", "quota_mb": -1}
    (line,) = checks.web_site_refusals([GOOD, bad], "/srv/www", "/var/log/apache2/sites")
    assert line.startswith("a b.example.go.id: ")
    for field in ("fqdn", "user", "docroot", "listen_ip", "tls", "quota_mb"):
        assert field in line
    assert "home" not in line.split(": ", 1)[1].replace("docroot", "")
    escape = {**GOOD, "home": "/srv/www/../etc", "docroot": "/srv/www/../etc/public"}
    assert "home" in checks.web_site_refusals([escape], "/srv/www", "/var/log/apache2/sites")[0]
    hidden = {**GOOD, "docroot": GOOD["home"] + "/.ssh"}
    assert "docroot" in checks.web_site_refusals([hidden], "/srv/www", "/var/log/apache2/sites")[0]


def test_takeovers_and_pools_from_the_hosts_accounts():
    passwd = {"w-a": ["x", "999", "999", "", "/home/w-a", "/bin/sh"]}
    assert checks.web_site_takeovers([GOOD], passwd) == ["a.example.go.id: user w-a already exists with another home"]
    assert checks.web_site_takeovers([GOOD], {"w-a": ["x", "1", "1", "", GOOD["home"], "/usr/sbin/nologin"]}) == []
    assert checks.web_site_pool({"fqdn": "b.example.go.id"}) == "b.example.go.id"
    assert checks.web_site_pool(GOOD) == "a.example.go.id"
