#!/usr/bin/python
"""Write, link and remove every configuration file of a run in one call on the host.

One module call replaces one copy/file task per file per site: the files of all
the host's sites go over in one payload and are written here, each atomically
(a temporary file in the same directory, then rename), so Apache or PHP-FPM
never reads half a file. The caller keeps a copy of every path it lists before
this runs and puts them back if the new configuration is refused.
"""

import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: web_site_files
short_description: Write, link and remove many files in one call (web_site role)
options:
  files:
    description: Files to hold exactly this content; each {path, content, mode, owner, group}.
    type: list
    elements: dict
    default: []
  links:
    description: Symbolic links; each {path, src}.
    type: list
    elements: dict
    default: []
  absent:
    description: Paths to remove (a file or a link; never a directory).
    type: list
    elements: str
    default: []
  directories:
    description: Directories to create when missing; each {path, mode, owner, group}.
    type: list
    elements: dict
    default: []
  secret:
    description: The contents are secret; no diff is returned (the task is no_log too).
    type: bool
    default: false
"""


class Refused(Exception):
    """A path this module will not touch (a directory where a file should be)."""


def _owner_ids(owner, group):
    import grp
    import pwd
    return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid


def _read(path):
    """(content bytes, mode, uid, gid) of a regular file; None when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise Refused(f"{path}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        return (None, None, None, None)  # a link or other: always replaced
    with open(path, "rb") as handle:
        return handle.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def file_needs_write(path, content, mode, uid, gid):
    """Whether a file differs from the wanted content, mode or owner."""
    found = _read(path)
    return found is None or found != (content.encode(), mode, uid, gid)


def write_file(path, content, mode, uid, gid):
    """Replace a file atomically: the new content appears whole or not at all."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".web_site.", dir=directory)
    try:
        # Mode and owner before the content: a key is never readable by others, not even for a moment.
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as out:
            out.write(content.encode())
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def link_needs_write(path, src):
    try:
        return os.readlink(path) != src
    except FileNotFoundError:
        return True
    except OSError:  # not a link
        if os.path.isdir(path) and not os.path.islink(path):
            raise Refused(f"{path}: is a directory, expected a link")
        return True


def write_link(path, src):
    """Point a link at src, atomically (a new link renamed over the old one)."""
    temporary = os.path.join(os.path.dirname(path), f".web_site.{os.getpid()}.{os.path.basename(path)}")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(src, temporary)
    os.rename(temporary, path)


def remove_needed(path):
    if os.path.isdir(path) and not os.path.islink(path):
        raise Refused(f"{path}: is a directory; only files and links are removed")
    return os.path.lexists(path)


def directory_needs_change(path, mode, uid, gid):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{path}: exists and is not a directory")
    return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (mode, uid, gid)


def make_directory(path, mode, uid, gid):
    if not os.path.isdir(path):
        os.makedirs(path, mode=mode)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def converge(files, links, absent, directories, check=False, ids=_owner_ids):
    """Bring the paths to the wanted state; returns (changed paths, diffs).

    Everything is checked before anything is written, so a refused path changes
    nothing. Directories first, then files and links, removals last.
    """
    work = []
    for d in directories:
        uid, gid = ids(d.get("owner", "root"), d.get("group", "root"))
        mode = int(str(d.get("mode", "0755")), 8)
        if directory_needs_change(d["path"], mode, uid, gid):
            work.append((d["path"], make_directory, (d["path"], mode, uid, gid), None))
    for f in files:
        uid, gid = ids(f.get("owner", "root"), f.get("group", "root"))
        mode = int(str(f.get("mode", "0644")), 8)
        if os.path.isdir(os.path.dirname(f["path"])) or any(d["path"] == os.path.dirname(f["path"])
                                                             for d in directories):
            if file_needs_write(f["path"], f["content"], mode, uid, gid):
                work.append((f["path"], write_file, (f["path"], f["content"], mode, uid, gid), f))
        else:
            raise Refused(f"{f['path']}: its directory does not exist")
    for link in links:
        if link_needs_write(link["path"], link["src"]):
            work.append((link["path"], write_link, (link["path"], link["src"]), None))
    for path in absent:
        if remove_needed(path):
            work.append((path, os.unlink, (path,), None))
    changed, diffs = [], []
    for path, action, args, wanted in work:
        if wanted is not None:
            before = _read(path)
            diffs.append({"before_header": path, "after_header": path,
                          "before": (before[0] or b"").decode(errors="replace") if before else "",
                          "after": wanted["content"]})
        if not check:
            action(*args)
        changed.append(path)
    return changed, diffs


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": []},
            "links": {"type": "list", "elements": "dict", "default": []},
            "absent": {"type": "list", "elements": "str", "default": []},
            "directories": {"type": "list", "elements": "dict", "default": []},
            "secret": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        changed, diffs = converge(p["files"], p["links"], p["absent"], p["directories"], check=module.check_mode)
    except (Refused, KeyError, OSError) as error:
        module.fail_json(msg=f"web_site_files: {error}")
    result = {"changed": bool(changed), "changed_paths": changed}
    if module._diff and not p["secret"]:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
