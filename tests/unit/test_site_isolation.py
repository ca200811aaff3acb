"""Isolation between the sites of one web server, without hosts: the PHP-FPM pool, the request option
that allows process execution, the modes the plan expects, the default vhosts and the SFTP umask."""

from dataclasses import replace
from datetime import date

import jinja2
import pytest
import yaml

from provisioner import naming
from provisioner.config import REPO_ROOT
from provisioner.errors import ValidationError
from provisioner.request import validate
from provisioner.site import DesiredSite, sha256
from provisioner.targets import web as web_target

ROLE = REPO_ROOT / "playbooks" / "roles" / "web_site"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
GOOD = (REPO_ROOT / "examples" / "tarakan-simkes.yaml").read_text()
TODAY = date(2024, 9, 30)
EXEC = ("exec", "passthru", "shell_exec", "system", "proc_open", "popen", "pcntl_exec", "proc_nice", "putenv")


def make_site(label="simkes", ip="203.0.113.10", **extra) -> DesiredSite:
    site = DesiredSite(
        request_id="HST-2024-0007", office="tarakan", label=label, zone="tarakankota.go.id",
        names=naming.site_names(label, "tarakankota.go.id"), web_host="web1", web_address="10.77.0.21",
        db_host=None, public_ip=ip, dedicated_ip=ip != "203.0.113.10", php=True, php_version="8.2",
        database=False, tls=False, quota_mb=100, bandwidth_kbps=0)
    return replace(site, **extra)


def _directives(pool: str) -> dict[str, str]:
    lines = [line.split(" = ", 1) for line in pool.splitlines() if " = " in line and not line.startswith(";")]
    return {key: value for key, value in lines}


def test_the_pool_disables_every_process_function_by_default():
    site = make_site()
    pool = _directives(site.pool())
    disabled = pool["php_admin_value[disable_functions]"].split(",")
    assert set(EXEC) <= set(disabled)
    assert disabled == DEFAULTS["web_site__disabled_functions"].split(",")
    home = site.names.home
    assert pool["php_admin_value[open_basedir]"] == f"{home}/"
    assert pool["php_admin_value[session.save_path]"] == f"{home}/sessions"
    assert pool["php_admin_value[upload_tmp_dir]"] == pool["php_admin_value[sys_temp_dir]"] == f"{home}/tmp"
    assert pool["env[TMPDIR]"] == f"{home}/tmp"


def test_a_site_that_asked_for_it_keeps_process_execution_and_the_rest():
    site = make_site(allow_exec=True)
    pool = _directives(site.pool())
    assert "php_admin_value[disable_functions]" not in pool
    assert pool["php_admin_value[open_basedir]"] == f"{site.names.home}/"
    assert pool["php_admin_value[session.save_path]"] == f"{site.names.home}/sessions"
    # The option is part of what is recorded and reviewed.
    assert site.record()["allow_exec"] is True and make_site().record()["allow_exec"] is False
    assert site.record()["pool_sha256"] != make_site().record()["pool_sha256"]
    assert site.web_item()["allow_exec"] is True and site.web_item()["pool_content"] == site.pool()


def _live_for(site, **state):
    n = site.names
    live = {"sites": {site.fqdn: {
        "user": {"home": n.home}, "sftp": True, "home": {"owner": "root", "group": n.user, "mode": "0750"},
        "docroot": {"owner": n.user, "group": n.user, "mode": "0750"}, "logdir": {"owner": "root"},
        "vhost_sha256": sha256(site.vhost()), "vhost_enabled": True, "pool_sha256": sha256(site.pool()),
        "tls_cert": False}}, "addresses": [site.public_ip], "default_vhosts": {site.public_ip: [80, 443]}}
    live["sites"][site.fqdn].update(state)
    return {"web1": live}


def test_the_plan_shows_the_option_with_the_pool_and_nothing_when_converged():
    site = make_site(allow_exec=True)
    assert web_target.plan([site], _live_for(site)) == []
    (change,) = web_target.plan([site], _live_for(site, pool_sha256="0" * 64))
    assert (change.action, change.kind, change.detail["allow_exec"]) == ("Update", "PHP-FPM pool", True)
    assert "disable_functions" not in change.detail["content"]


def test_the_plan_brings_old_modes_and_a_missing_default_vhost_in_line():
    site = make_site()
    old = _live_for(site, home={"owner": "root", "group": "root", "mode": "0755"},
                    docroot={"owner": site.names.user, "group": site.names.user, "mode": "0755"})
    old["web1"]["default_vhosts"] = {}
    got = {(c.action, c.kind, c.name): c.detail for c in web_target.plan([site], old)}
    assert got[("Update", "home", site.names.home)]["mode"] == "0750"
    assert got[("Update", "home", site.names.home)]["group"] == site.names.user
    assert got[("Update", "docroot", site.names.docroot)]["mode"] == "0750"
    assert ("Create", "default vhost", "203.0.113.10") in got


def test_a_default_vhost_is_planned_once_per_address():
    a, b, c = make_site("a1"), make_site("b1"), make_site("c1", ip="203.0.113.130")
    live = _live_for(a)
    for s in (b, c):
        live["web1"]["sites"].update(_live_for(s)["web1"]["sites"])
    live["web1"]["default_vhosts"] = {}
    defaults = [(ch.site, ch.name) for ch in web_target.plan([a, b, c], live) if ch.kind == "default vhost"]
    assert defaults == [(a.fqdn, "203.0.113.10"), (c.fqdn, "203.0.113.130")]


def test_a_removal_plans_only_a_home_made_as_the_role_makes_it_and_notes_what_it_leaves():
    site = make_site()
    n = site.names
    home_made = {"owner": "root", "group": n.user, "mode": "0750", "kind": "directory"}
    logdir_made = {"owner": "root", "group": "adm", "mode": "0750", "kind": "directory"}
    live = _live_for(site, home=home_made, logdir=logdir_made)
    kinds = [(c.action, c.kind, c.name) for c in web_target.removal_changes([site], live)]
    assert ("Delete", "site directory", n.home) in kinds
    assert web_target.removal_notes([site], live) == {}

    # A root-owned file where the home goes (left by hand) and a link as the log directory.
    live = _live_for(site, home={"owner": "root", "group": "root", "mode": "0600", "kind": "file"},
                     logdir={**logdir_made, "kind": "link"})
    assert "site directory" not in [c.kind for c in web_target.removal_changes([site], live)]
    assert web_target.removal_notes([site], live) == {site.fqdn: (
        f"left: {n.home} is not the site's: a file owned by root; left: {n.logdir} is not the site's: a link")}

    # A directory of someone else, or a link to the site's own directory, is not the site's either.
    for found, why in (({**home_made, "group": "root"}, "a directory owned by root:root"),
                       ({**home_made, "kind": "link"}, "a link")):
        live = _live_for(site, home=found, logdir=logdir_made)
        assert "site directory" not in [c.kind for c in web_target.removal_changes([site], live)]
        assert web_target.removal_notes([site], live) == {site.fqdn: f"left: {n.home} is not the site's: {why}"}

    # Nothing there: nothing to remove and nothing to say.
    live = _live_for(site, user=None, home=None, logdir=None, vhost_sha256=None, pool_sha256=None)
    assert web_target.removal_changes([site], live) == [] and web_target.removal_notes([site], live) == {}


def _problems(text, config):
    with pytest.raises(ValidationError) as err:
        validate(text.encode(), config, today=TODAY)
    return {p.field: p.rule for p in err.value.problems}


def test_allow_exec_is_optional_and_off_by_default(config):
    assert validate(GOOD.encode(), config, today=TODAY).site.allow_exec is False
    text = GOOD.replace("  tls: true\n", "  tls: true\n  allow_exec: true\n")
    request = validate(text.encode(), config, today=TODAY)
    assert request.site.allow_exec is True and request.summary()["site"]["allow_exec"] is True


@pytest.mark.parametrize("value, rule", [('"yes"', "must be true or false"), ("1", "must be true or false")])
def test_allow_exec_must_be_a_boolean(config, value, rule):
    text = GOOD.replace("  tls: true\n", f"  tls: true\n  allow_exec: {value}\n")
    assert _problems(text, config) == {"site.allow_exec": rule}


def test_allow_exec_is_only_for_php_sites(config):
    text = GOOD.replace("  stack: php\n", "  stack: static\n").replace('  php_version: "8.2"\n', "")
    text = text.replace("  tls: true\n", "  tls: true\n  allow_exec: true\n")
    assert _problems(text, config) == {"site.allow_exec": "only for stack php; remove it for a static site"}


def _role_template(path: str, **variables) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), trim_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(path).render(**variables)


def test_the_default_vhosts_answer_404_for_every_address_and_name_no_site():
    text = _role_template("etc/apache2/conf-available/provisioner-default-vhosts.conf.j2",
                          web_site__default_addresses=["203.0.113.10", "203.0.113.130"],
                          web_site__tls_dir=DEFAULTS["web_site__tls_dir"],
                          web_site__default_cn=DEFAULTS["web_site__default_cn"])
    blocks = text.split("<VirtualHost ")[1:]
    assert [b.split(">", 1)[0] for b in blocks] == ["203.0.113.10:80", "203.0.113.10:443",
                                                   "203.0.113.130:80", "203.0.113.130:443"]
    for block in blocks:
        assert "Redirect 404 /" in block and "ErrorDocument 404" in block
        assert "ServerName default.invalid" in block and "DocumentRoot" not in block
    for block in blocks[1::2]:
        assert "SSLCertificateFile \"/etc/ssl/provisioner/_default.crt\"" in block
    # The default certificate's name can be no site's file name: an fqdn has no underscore.
    assert not naming.LABEL.fullmatch("_default")


def test_sftp_uploads_get_umask_0027():
    text = _role_template("etc/ssh/sshd_config.d/20-provisioner-sftp.conf.j2", web_site__sftp_group="sftp-sites")
    assert "ForceCommand internal-sftp -u 0027" in text


def test_an_account_a_stopped_run_left_without_a_password_gets_the_stored_one():
    site = make_site()
    assert web_target.plan([site], _live_for(site, password_set=True)) == []
    (change,) = web_target.plan([site], _live_for(site, password_set=False))
    assert (change.action, change.kind, change.name) == ("Create", "SFTP password", site.names.user)
    # Older probes said nothing about it: no change then.
    assert web_target.plan([site], _live_for(site, password_set=None)) == []
