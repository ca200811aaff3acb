"""The release layout of a site's home, and its live state read from the web host.

    <home>/releases/<YYYYMMDD-HHMMSS-xxxxxx>/   one directory per release (the site user's)
    <home>/shared/                              what survives releases (uploads, configuration)
    <home>/current -> releases/<id>             the live release
    <home>/public  -> current                   the document root Apache serves

The home itself stays root:<site group> 0750 (the SFTP chroot), so only root
swaps `current` and `public`; the links are owned by the site user so Apache's
SymLinksIfOwnerMatch follows them. The first deploy moves an existing real
`public/` into the release 00000000-000000-awal, keeping its files.
"""

import json
import re
from dataclasses import dataclass, field

from provisioner import ssh
from provisioner.errors import HostError

RELEASE_ID = re.compile(r"(\d{8}-\d{6}-[a-z0-9]{4,8})")
FIRST_RELEASE = "00000000-000000-awal"


@dataclass(frozen=True)
class Paths:
    home: str

    @property
    def releases(self) -> str:
        return f"{self.home}/releases"

    @property
    def shared(self) -> str:
        return f"{self.home}/shared"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"


@dataclass
class LiveLayout:
    """What the web host shows of a site's home."""

    home: bool
    public: str | None  # "dir", "link" or None
    public_target: str | None
    current: str | None  # the release id `current` points at
    releases: list[str] = field(default_factory=list)  # sorted, oldest first
    partial: list[str] = field(default_factory=list)  # leftovers of a stopped deploy

    @property
    def converted(self) -> bool:
        return self.public == "link" and self.public_target == "current"

    @property
    def previous(self) -> str | None:
        """The release before the current one (the rollback default)."""
        if self.current not in self.releases:
            return None
        at = self.releases.index(self.current)
        return self.releases[at - 1] if at > 0 else None


PROBE = r'''
import json, os, re, stat
INPUT = json.loads(__INPUT__)
home = INPUT["home"]
ident = re.compile(INPUT["pattern"])

def kind(path):
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "other"

out = {"home": kind(home) == "dir", "public": kind(home + "/public"), "public_target": None,
       "current": None, "releases": [], "partial": []}
if out["public"] == "link":
    out["public_target"] = os.readlink(home + "/public")
if kind(home + "/current") == "link":
    target = os.readlink(home + "/current")
    if target.startswith("releases/") and ident.fullmatch(target[len("releases/"):]):
        out["current"] = target[len("releases/"):]
    else:
        out["current"] = "?" + target
if kind(home + "/releases") == "dir":
    for name in sorted(os.listdir(home + "/releases")):
        if ident.fullmatch(name) and kind(home + "/releases/" + name) == "dir":
            out["releases"].append(name)
        elif name.startswith("."):
            out["partial"].append(name)
print(json.dumps(out))
'''


def read(host, home: str) -> LiveLayout:
    """One SSH session: the home's public, current, releases and leftovers."""
    pattern = f"{RELEASE_ID.pattern}|{FIRST_RELEASE}"
    script = PROBE.replace("__INPUT__", repr(json.dumps({"home": home, "pattern": pattern})))
    rc, out, err = ssh.run(host, "python3 -", stdin=script, sudo=True)
    if rc != 0:
        raise HostError(f"{host.name}: reading the releases of {home} failed: {(err or out).strip()[-300:]}")
    try:
        data = json.loads(out)
    except ValueError:
        raise HostError(f"{host.name}: the releases probe printed no JSON: {out[:200]!r}") from None
    return LiveLayout(**data)


def shared_link_target(path: str) -> str:
    """The relative target of <release>/<path> -> <home>/shared/<path> (valid in the SFTP chroot too)."""
    depth = path.count("/") + 1
    return "../" * (depth + 1) + "shared/" + path
