"""The cached Debian 12 root filesystem that every lab host overlays.

debootstrap runs once per package set; the result is kept under CACHE_DIR and
named by a hash of what went into it, so a change of the list builds anew and a
warm `lab up` reuses it. A build goes to a temporary folder and is renamed only
when complete, so an interrupted build is never mistaken for a cache.
"""

import fcntl
import hashlib
import re
import shutil
from importlib import resources
from pathlib import Path

from provisioner.lab import topology
from provisioner.lab.system import run

SUITE = "bookworm"



def packages() -> tuple[str, ...]:
    """The package list shared with the Vagrantfile (packages.txt)."""
    text = (resources.files("provisioner.lab") / "packages.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


# Bump when the post-processing below changes what a cache contains.
CACHE_FORMAT = 1


def cache_key() -> str:
    spec = f"{SUITE}|{CACHE_FORMAT}|{' '.join(sorted(packages()))}"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def cache_path() -> Path:
    return topology.CACHE_DIR / f"rootfs-{SUITE}-{cache_key()}"


def is_cached() -> bool:
    return (cache_path() / ".provisioner-complete").exists()


def mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror this machine's apt already uses, if it names one.

    Reusing it keeps the lab on the same mirror (and proxy) as the machine; with
    none found, debootstrap's own default applies.
    """
    sources = [apt_dir / "sources.list"]
    sources += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    sources += sorted((apt_dir / "sources.list.d").glob("*.list"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and SUITE in suites.group(1).split() and uris.group(1).rstrip("/").endswith("/debian"):
                    return uris.group(1)
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+.*\bmain\b", line)
                if m and m.group(2) == SUITE and m.group(1).rstrip("/").endswith("/debian"):
                    return m.group(1)
    return None


def ensure_cache(log=print) -> Path:
    """Return the cached root filesystem, building it first if needed."""
    target = cache_path()
    topology.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(topology.CACHE_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_cached():
            return target
        building = target.with_name(target.name + ".building")
        if building.exists():
            shutil.rmtree(building)
        log(f"building the lab root filesystem (debootstrap {SUITE}, once): {target}")
        argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages()), SUITE, str(building)]
        source = mirror()
        if source:
            argv.append(source)
        run(*argv)
        _post_process(building)
        (building / ".provisioner-complete").write_text(cache_key() + "\n")
        building.rename(target)
        _prune_old(keep=target)
    return target


def _post_process(root: Path) -> None:
    # Each host gets its own SSH host keys at `lab up`; none are shared.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Packages are installed; the lists and archives only take room.
    run("chroot", str(root), "apt-get", "clean")
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()


def _prune_old(keep: Path) -> None:
    for old in topology.CACHE_DIR.glob(f"rootfs-{SUITE}-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
