"""The systemd files the roles write on a server pass `systemd-analyze verify`.

host_web (host prepare) and web_site write a drop-in for PHP-FPM (umask 0027,
ProtectProc); public_ip installs the boot unit that brings dedicated addresses
up again. They are found in the roles' tasks, so a unit added later is checked
as well, written to tmp_path as the task would write it, and verified there.
verify needs every ExecStart to exist: a command the same role installs is
replaced by the role's own copy of it, and the unit a drop-in extends (Debian's
php8.2-fpm.service, not on this machine) by a stand-in of the same name.
"""

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from provisioner.config import REPO_ROOT

ROLES = REPO_ROOT / "playbooks" / "roles"
SYSTEM_DIRS = ("/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/")
MODULES = ("ansible.builtin.copy", "ansible.builtin.template", "copy", "template")
# Debian's php8.2-fpm.service in the parts verify reads; ExecStart is set per test.
STAND_IN = """[Unit]
Description=Stand-in for Debian's {name}
After=network.target

[Service]
Type=notify
ExecStart={exec_start}

[Install]
WantedBy=multi-user.target
"""


def _defaults() -> dict:
    """Every role's defaults and plain vars, for rendering paths and contents; `item` is the PHP
    version host_web prepares."""
    merged = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")) + sorted(ROLES.glob("*/vars/main.yml")):
        merged |= yaml.safe_load(path.read_text()) or {}
    merged["item"] = merged["host_web__php_version"]
    return merged


def _render(text: str, variables: dict) -> str:
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(variables)


def _tasks(tasks):
    for task in tasks or ():
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _written(role: Path) -> list[dict]:
    """What a role's copy and template tasks write: destination, and the role file it comes from, if any.

    A destination made of a loop item's fields (a site's docroot...) does not render
    from the defaults: it is a site's file, never a systemd one, and is left out.
    """
    variables = _defaults()
    found = []
    for path in sorted(role.glob("tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            module = next((m for m in MODULES if m in task), None)
            if module is None or "dest" not in task[module]:
                continue
            args = task[module]
            try:
                dest = _render(args["dest"], variables)
            except jinja2.UndefinedError:
                continue
            source = None
            if "src" in args:
                source = role / ("templates" if "template" in module else "files") / args["src"]
            found.append({"role": role.name, "task": task.get("name"), "dest": dest, "module": module,
                          "args": args, "source": source})
    return found


def _content(written: dict) -> str:
    """The file as the task writes it on the host."""
    if "content" in written["args"]:
        return _render(written["args"]["content"], _defaults())
    text = written["source"].read_text()
    return _render(text, _defaults()) if "template" in written["module"] else text


def systemd_files() -> list[dict]:
    found = [w for role in sorted(ROLES.iterdir()) for w in _written(role) if w["dest"].startswith(SYSTEM_DIRS)]
    return [dict(w, content=_content(w)) for w in found]


def test_the_roles_write_the_php_fpm_drop_in_and_the_boot_unit():
    # Anchors the search: if a role stops writing one of these (or writes another),
    # this list changes and the verify below covers what it now writes.
    assert sorted((w["role"], w["dest"]) for w in systemd_files()) == [
        ("host_web", "/etc/systemd/system/php8.2-fpm.service.d/provisioner.conf"),
        ("public_ip", "/etc/systemd/system/provisioner-public-addresses.service"),
        ("web_site", "/etc/systemd/system/php8.2-fpm.service.d/provisioner.conf"),
    ]


def test_the_php_fpm_drop_in_sets_the_umask_and_hides_other_processes():
    for written in systemd_files():
        if not written["dest"].endswith(".service.d/provisioner.conf"):
            continue
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # systemd keys are case-sensitive
        parser.read_string(written["content"])
        assert dict(parser["Service"]) == {"UMask": "0027", "ProtectProc": "invisible"}, written["role"]


def _lay_out(files: list[dict], root: Path) -> list[Path]:
    """The files under root as systemd would find them; the units to verify (stand-ins for the extended ones)."""
    installed = {}  # a path on the host -> the role's copy of the file put there
    for role in {w["role"] for w in files}:
        installed |= {w["dest"]: w["source"] for w in _written(ROLES / role) if w["source"] is not None}
    units = set()
    for written in files:
        relative = Path(written["dest"]).relative_to(next(d for d in SYSTEM_DIRS if written["dest"].startswith(d)))
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        text = written["content"]
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                command = shlex.split(line.partition("=")[2].lstrip("-@:+!"))[0]
                assert command in installed, f"{written['dest']}: {command} is installed by no role"
                text = text.replace(command, str(installed[command]))
        target.write_text(text)
        if target.parent.name.endswith(".d"):
            base = root / target.parent.name[:-2]
            if not base.exists():
                base.write_text(STAND_IN.format(name=base.name, exec_start=f"{shutil.which('true')} --nodaemonize"))
            units.add(base)
        else:
            units.add(target)
    return sorted(units)


def _verify(units: list[Path], root: Path) -> tuple[int, list[str]]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    run = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    # verify also reports on units of this machine; what it says of ours names their path or unit.
    ours = [str(root)] + [unit.name for unit in units]
    return run.returncode, [line for line in (run.stdout + run.stderr).splitlines()
                            if any(name in line for name in ours)]


@pytest.mark.parametrize("role", ["host_web", "web_site", "public_ip"])
def test_the_systemd_files_of_each_role_pass_systemd_analyze_verify(role, tmp_path):
    files = [w for w in systemd_files() if w["role"] == role]
    assert files
    units = _lay_out(files, tmp_path)
    rc, problems = _verify(units, tmp_path)
    assert rc == 0 and problems == [], problems


def test_verify_reads_the_drop_in_and_names_a_key_it_does_not_know(tmp_path):
    # The check above would pass on a drop-in verify never read: a misspelt key proves it is read.
    (drop_in,) = [w for w in systemd_files() if w["role"] == "host_web"]
    broken = dict(drop_in, content=drop_in["content"].replace("UMask=", "UMsk="))
    units = _lay_out([broken], tmp_path)
    _rc, problems = _verify(units, tmp_path)
    assert any("provisioner.conf" in line and "UMsk" in line for line in problems), problems
