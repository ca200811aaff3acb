#!/usr/bin/python
"""Read, in one call, what the web_site role needs to know of the host before it changes it.

Replaces a task per question (the account database, the keys of TLS sites, the
sshd drop-in, PHP-FPM's umask settings and its running masters, the default
vhosts' certificate, the addresses the enabled managed vhosts bind): each was a round trip to the host, and most runs find
them all as the role left them. The role compares what this returns with what
it wants and runs a task only where they differ, so a host changed by hand is
still put right on the next run. Reads only; changes nothing.
"""

import glob
import hashlib
import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: web_site_host
short_description: The host's accounts and web settings as the web_site role sees them (read only)
options:
  tls_dir: {type: str, required: true, description: "Where site certificates and keys live."}
  sshd_dropin: {type: str, required: true, description: "The SFTP drop-in of sshd."}
  php_versions: {type: list, elements: str, default: [], description: "PHP versions of the present sites."}
  sites_enabled: {type: str, default: /etc/apache2/sites-enabled, description: "Apache's enabled vhosts."}
"""

RETURN = r"""
ansible_facts.getent_passwd: {type: dict, description: "user -> [password, uid, gid, gecos, home, shell], as getent."}
tls_keys: {type: list, description: "Names (no .key) of the keys in tls_dir."}
default_cert: {type: bool, description: "tls_dir/_default.crt exists."}
sshd_dropin: {type: dict, description: "{sha1, owner, group, mode} of the drop-in, or {} when absent."}
php: {type: dict, description: "version -> {dropin_sha1, dropin_mode, dropin_owner, dropin_dir_mode,
  default_umask (its umask lines), default_mode, default_owner, master_umask}."}
systemd: {type: bool, description: "systemd runs this host (/run/systemd/system)."}
managed_vhosts: {type: dict, description: "file name -> the IPv4 addresses its <VirtualHost> lines bind, for
  each enabled vhost the role wrote (a line starts with the role's mark)."}
"""

UMASK_LINE = re.compile(r"^\s*umask\b")
MANAGED_MARK = "# Managed by provisioner (web_site role)"
BOUND = re.compile(r"^<VirtualHost ([0-9.]*):[0-9]*>$", re.M)


def file_facts(path):
    """{sha1, owner, group, mode} of a regular file (not followed through a link), or {}."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}
    digest = None
    if stat.S_ISREG(st.st_mode):  # lstat: a link is never followed, nor taken for the file
        with open(path, "rb") as handle:
            digest = hashlib.sha1(handle.read()).hexdigest()  # noqa: S324 - compared with Ansible's sha1 filter
    return {"sha1": digest, "owner": st.st_uid, "group": st.st_gid, "mode": "%04o" % (st.st_mode & 0o7777)}


def dir_mode(path):
    """The mode of a directory owned by root (not a link), or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_gid != 0:
        return None
    return "%04o" % (st.st_mode & 0o7777)


def umask_lines(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in handle if UMASK_LINE.match(line)]
    except FileNotFoundError:
        return None


def master_umask(version):
    """The umask of the running PHP-FPM master of a version ("" when none runs)."""
    try:
        with open(f"/run/php/php{version}-fpm.pid") as handle:
            pid = handle.read().strip()
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return line.split(":", 1)[1].strip()
    except (OSError, ValueError):
        pass
    return ""


def managed_vhosts(sites_enabled):
    """{file name: sorted addresses} of the enabled vhosts (links followed) that carry the role's mark."""
    found = {}
    for path in sorted(glob.glob(os.path.join(sites_enabled, "*.conf"))):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except (FileNotFoundError, IsADirectoryError):
            continue  # a dangling link, or not a file: Apache would not read it either
        if any(line.startswith(MANAGED_MARK) for line in text.splitlines()):
            found[os.path.basename(path)] = sorted({a for a in BOUND.findall(text) if a})
    return found


def main():
    module = AnsibleModule(argument_spec={
        "tls_dir": {"type": "str", "required": True},
        "sshd_dropin": {"type": "str", "required": True},
        "php_versions": {"type": "list", "elements": "str", "default": []},
        "sites_enabled": {"type": "str", "default": "/etc/apache2/sites-enabled"},
    }, supports_check_mode=True)
    p = module.params
    passwd = {e.pw_name: ["x", str(e.pw_uid), str(e.pw_gid), e.pw_gecos, e.pw_dir, e.pw_shell]
              for e in pwd.getpwall()}
    keys = sorted(os.path.splitext(os.path.basename(k))[0] for k in glob.glob(os.path.join(p["tls_dir"], "*.key")))
    php = {}
    for version in p["php_versions"]:
        directory = f"/etc/systemd/system/php{version}-fpm.service.d"
        dropin = file_facts(f"{directory}/provisioner.conf")
        default = file_facts(f"/etc/default/php-fpm{version}")
        php[version] = {"dropin_sha1": dropin.get("sha1"), "dropin_mode": dropin.get("mode"),
                        "dropin_owner": dropin.get("owner"), "dropin_dir_mode": dir_mode(directory),
                        "default_umask": umask_lines(f"/etc/default/php-fpm{version}"),
                        "default_mode": default.get("mode"), "default_owner": default.get("owner"),
                        "master_umask": master_umask(version)}
    module.exit_json(changed=False, ansible_facts={"getent_passwd": passwd}, tls_keys=keys,
                     default_cert=os.path.isfile(os.path.join(p["tls_dir"], "_default.crt")),
                     sshd_dropin=file_facts(p["sshd_dropin"]), php=php,
                     systemd=os.path.isdir("/run/systemd/system"),
                     managed_vhosts=managed_vhosts(p["sites_enabled"]))


if __name__ == "__main__":
    main()
