#!/usr/bin/python
"""Accounts, directories and placeholders of all of a host's sites in one call.

Replaces one user/group/file/command task per site and per directory: one
process on the host reads the account databases once, then creates what is
missing. With `absent`, it removes the accounts, groups, homes and log
directories of removed sites instead (after the caller has reloaded PHP-FPM,
so the site's workers are on their way out).

Rules kept from the task files this replaces:
- an account is the site's only when its home is the site's home: another
  one is refused (present) or left alone (absent);
- the SFTP password hash goes to `chpasswd --encrypted` on stdin, never into
  an argv; it is set on creation, on rotation, and where an earlier run
  stopped before setting it; hashes are no_log;
- the home is root:<site> 0750 (sshd's chroot must be root-owned), docroot
  <site>:<site> 0750, tmp and sessions <site> 0700, log directory root:adm
  0750, the home base root:root 0711; a path that is a link or not a
  directory is refused, never followed;
- group write and every bit for others are taken from the site's files by
  find/chmod running as the site user, so a link the site planted cannot turn
  it into root changing a file outside the home;
- a docroot without an index.* gets the placeholder page (never overwritten);
- a removed site's home and log directory go only when they are directories
  owned as made here (home root or the site's user : the site's group, log
  directory root:adm); anything else there was not made by the toolkit: it is
  left, named in `left` ("left: PATH is not the site's: a file owned by root")
  and as a warning, never a failure.
"""

import grp
import os
import pwd
import shutil
import stat
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: web_site_accounts
short_description: Site accounts, directories and placeholders in one call (web_site role)
options:
  present: {type: list, elements: dict, default: [],
            description: "Sites to make: {fqdn, user, home, docroot, logdir, rotate_password, placeholder}."}
  absent: {type: list, elements: dict, default: [],
           description: "Sites to remove: {fqdn, user, home, logdir}."}
  password_hashes: {type: dict, default: {}, no_log: true, description: "fqdn -> SHA-512 crypt hash."}
  sftp_group: {type: str, required: true}
  apache_user: {type: str, required: true}
  home_base: {type: str, required: true}
  log_base: {type: str, required: true}
  userdel_tries: {type: int, default: 6}
"""

RETURN = r"""
done: {type: list, description: "What changed (or would, in check mode)."}
left: {type: list, description: "Paths of removed sites left because they are not the site's, and why."}
apache_groups_changed: {type: bool, description: "Apache joined site groups (its children need a reload)."}
"""

NOLOGIN = "/usr/sbin/nologin"


class Refused(Exception):
    """A site this module will not touch as asked."""


def _run(argv, stdin=None):
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Refused(f"{argv[0]} {argv[-1] if stdin is None else ''} failed (rc {done.returncode}): "
                      f"{done.stderr.strip()[:300]}")
    return done.stdout


def accounts():
    """user -> (home, primary gid, shell)."""
    return {p.pw_name: (p.pw_dir, p.pw_gid, p.pw_shell) for p in pwd.getpwall()}


def groups():
    """group -> (gid, members)."""
    return {g.gr_name: (g.gr_gid, set(g.gr_mem)) for g in grp.getgrall()}


def users_without_password(shadow="/etc/shadow"):
    """Names only: the hashes are never read into a result."""
    missing = set()
    with open(shadow) as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            if len(fields) > 1 and (fields[1] == "" or fields[1][:1] in ("!", "*")):
                missing.add(fields[0])
    return missing


def refuse_takeovers(present, passwd):
    """Every site whose user exists with another home, as one message (nothing changed yet)."""
    foreign = [f"{s['fqdn']}: user {s['user']} already exists with another home"
               for s in present if s["user"] in passwd and passwd[s["user"]][0] != s["home"]]
    if foreign:
        raise Refused("; ".join(foreign) + "; refusing")


def directory_plan(present, home_base, log_base):
    """(path, owner, group, mode) of every directory, parents first."""
    out = [(home_base, "root", "root", 0o711), (log_base, "root", "adm", 0o750)]
    for s in present:
        u = s["user"]
        out += [(s["home"], "root", u, 0o750), (s["docroot"], u, u, 0o750),
                (s["home"] + "/tmp", u, u, 0o700), (s["home"] + "/sessions", u, u, 0o700),
                (s["logdir"], "root", "adm", 0o750)]
    return out


def directory_state(path):
    """(mode, uid, gid) of a directory, None if missing; a link or a file is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{path} exists and is not a directory (links are not followed)")
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def ensure_directory(path, uid, gid, mode):
    """Create (parents root-owned 0755, as the file module does) and set owner and mode
    through a descriptor opened without following links."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for p in reversed(missing):
        os.mkdir(p, 0o700 if p == path else 0o755)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def has_index(docroot):
    try:
        return any(name.startswith("index.") for name in os.listdir(docroot))
    except FileNotFoundError:
        return False


def write_placeholder(docroot, content, uid, gid):
    """index.html 0640 of the site; never replaces anything and never follows a link."""
    dfd = os.open(docroot, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open("index.html", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    finally:
        os.close(dfd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o640)
        os.write(fd, content.encode())
    finally:
        os.close(fd)


def sweep_argv(site):
    return ["runuser", "-u", site["user"], "--", "find", site["home"], "-mindepth", "1", "-xdev",
            "-user", site["user"], "(", "-type", "f", "-o", "-type", "d", ")", "-perm", "/g=w,o=rwx",
            "-print", "-exec", "chmod", "g-w,o-rwx", "{}", "+"]


def make_present(present, hashes, sftp_group, apache_user, home_base, log_base, check):
    """Create what is missing; returns (list of what changed, apache's groups changed)."""
    passwd, groups_now = accounts(), groups()
    refuse_takeovers(present, passwd)
    no_password = users_without_password() if present else set()
    # A new or rotated account needs its hash; one an earlier run left without a password gets it when given.
    required = [s for s in present if s.get("rotate_password") or s["user"] not in passwd]
    missing = [s["fqdn"] for s in required if s["fqdn"] not in hashes]
    if missing:
        raise Refused("no SHA-512 crypt hash in provisioner_secrets.sftp_password_hashes for: "
                      + ", ".join(missing))
    need_hash = required + [s for s in present if s not in required and s["user"] in no_password
                            and s["fqdn"] in hashes]
    done = []
    for name in [sftp_group] + [s["user"] for s in present]:
        if name not in groups_now:
            done.append(f"group {name}")
            if not check:
                _run(["groupadd", "--system", name])
    for s in present:
        user = s["user"]
        if user not in passwd:
            done.append(f"user {user}")
            if not check:
                _run(["useradd", "--system", "--gid", user, "--groups", sftp_group, "--home-dir", s["home"],
                      "--no-create-home", "--shell", NOLOGIN, user])
            continue
        # An existing account of the site: exactly its own group, the SFTP group and no shell.
        if check:
            continue
        groups_now = groups_now if user in groups_now else groups()
        home, gid, shell = passwd[user]
        supplementary = {g for g, (_, members) in groups_now.items() if user in members}
        if gid != groups_now[user][0] or shell != NOLOGIN or supplementary != {sftp_group}:
            done.append(f"user {user}")
            _run(["usermod", "--gid", user, "--groups", sftp_group, "--shell", NOLOGIN, user])
    if need_hash:
        done += [f"password {s['user']}" for s in need_hash]
        if not check:
            # One chpasswd for all: the hashes travel on its stdin, never in an argv.
            _run(["chpasswd", "--encrypted"],
                 stdin="".join(f"{s['user']}:{hashes[s['fqdn']]}\n" for s in need_hash))
    apache_changed = False
    if present and not check:
        # Apache serves what a site's group may read; new children pick the groups up at the graceful reload.
        groups_now = groups()
        lacking = [s["user"] for s in present if apache_user not in groups_now[s["user"]][1]]
        if lacking:
            _run(["usermod", "--append", "--groups", ",".join(lacking), apache_user])
            done.append(f"{apache_user} joins {', '.join(lacking)}")
            apache_changed = True
    for path, owner, group, mode in directory_plan(present, home_base, log_base):
        found = directory_state(path)
        if check:
            if found is None or found[0] != mode:
                done.append(f"directory {path}")
            continue
        uid, gid = pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
        if found != (mode, uid, gid):
            done.append(f"directory {path}")
            ensure_directory(path, uid, gid, mode)
    if check:
        return done, apache_changed
    for s in present:
        # A directory the agency made unreadable to itself is its own business: the sweep's errors are ignored.
        swept = subprocess.run(sweep_argv(s), capture_output=True, text=True, check=False).stdout
        if swept.strip():
            done.append(f"permissions under {s['home']}")
        if not has_index(s["docroot"]):
            pw = pwd.getpwnam(s["user"])
            write_placeholder(s["docroot"], s["placeholder"], pw.pw_uid, pw.pw_gid)
            done.append(f"placeholder {s['docroot']}/index.html")
    return done, apache_changed


def remove_tree(path):
    """Remove a directory tree without following links (a link itself is just unlinked)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
        return True
    if os.path.isdir(path):
        shutil.rmtree(path)
        return True
    return False


def userdel(user, tries, pause=1.0):
    """userdel, waiting for the PHP workers of a pool just removed to exit (rc 8: user logged in)."""
    for attempt in range(tries):
        done = subprocess.run(["userdel", user], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return
        if attempt + 1 < tries:
            time.sleep(pause)
    raise Refused(f"userdel {user} failed (rc {done.returncode}): {done.stderr.strip()[:300]}")


def owner_names(st):
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def not_the_sites(path, owners, group):
    """Why what is at `path` is not the site's (None if it is, or if nothing is there).

    Only a directory owned as this module makes it is the site's: a link, a file, or a
    directory of another owner was put there by someone else and is left where it is.
    `owners`: the uids it may have; `group`: its gid (None when that group is gone).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    owner, group_name = owner_names(st)
    if stat.S_ISLNK(st.st_mode):
        return f"left: {path} is not the site's: a link"
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else "something"
        return f"left: {path} is not the site's: {what} owned by {owner}"
    if st.st_uid not in owners or st.st_gid != group:
        return f"left: {path} is not the site's: a directory owned by {owner}:{group_name}"
    return None


def make_absent(absent, check, tries):
    """Remove the sites' accounts and directories; returns (what changed, what was left and why)."""
    passwd, groups_now = accounts(), groups()
    done, left = [], []
    for s in absent:
        # Only an account whose home is the site's home is the site's own.
        own = s["user"] in passwd and passwd[s["user"]][0] == s["home"]
        # Judged before userdel, which may take the site's group (the home's group) with it.
        site_gid = groups_now[s["user"]][0] if s["user"] in groups_now else None
        site_uids = {0} | ({pwd.getpwnam(s["user"]).pw_uid} if s["user"] in passwd else set())
        adm_gid = groups_now["adm"][0] if "adm" in groups_now else None
        kept = {path: why for path, why in ((s["home"], not_the_sites(s["home"], site_uids, site_gid)),
                                            (s["logdir"], not_the_sites(s["logdir"], {0}, adm_gid))) if why}
        left += kept.values()
        if own:
            done.append(f"user {s['user']}")
            if not check:
                userdel(s["user"], tries)
            if s["user"] in groups_now:
                done.append(f"group {s['user']}")
                if not check and s["user"] in groups():
                    _run(["groupdel", s["user"]])
        for path in (s["home"], s["logdir"]):
            if os.path.lexists(path) and path not in kept:
                done.append(f"remove {path}")
                if not check:
                    remove_tree(path)
    return done, left


def main():
    module = AnsibleModule(
        argument_spec={
            "present": {"type": "list", "elements": "dict", "default": []},
            "absent": {"type": "list", "elements": "dict", "default": []},
            "password_hashes": {"type": "dict", "default": {}, "no_log": True},
            "sftp_group": {"type": "str", "required": True},
            "apache_user": {"type": "str", "required": True},
            "home_base": {"type": "str", "required": True},
            "log_base": {"type": "str", "required": True},
            "userdel_tries": {"type": "int", "default": 6},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        done, apache_changed = make_present(p["present"], p["password_hashes"], p["sftp_group"],
                                            p["apache_user"], p["home_base"], p["log_base"], module.check_mode)
        removed, left = make_absent(p["absent"], module.check_mode, p["userdel_tries"])
        done += removed
    except (Refused, KeyError, OSError) as error:
        module.fail_json(msg=f"web_site_accounts: {error}")
    # What was left is no failure: it was never the site's (the removal plan names it too).
    for note in left:
        module.warn(note)
    module.exit_json(changed=bool(done), done=done, left=left, apache_groups_changed=apache_changed)


if __name__ == "__main__":
    main()
