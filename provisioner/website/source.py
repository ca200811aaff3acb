"""A release's content, fetched on the controller and refused when it is unsafe.

Sources: a `.tar.gz`/`.tgz`/`.zip` archive, or a git repository (a local path or a
URL) at a ref. An archive is inspected member by member BEFORE anything is
extracted: a path that leaves the directory or is absolute, a link that points
outside (or through another link), a hard link, a device or FIFO, a setuid/setgid
bit, more files or bytes than the limits, or the compression ratio of a bomb is
refused (ValidationError naming the member and the rule), and nothing reaches a
host. A gzip stream is read through a cap, so a bomb never fills the
controller's disk either. A git clone's tree is listed and held to the same
rules before it is checked out, and the checkout again as a tree (`.git` is left out).

What passes becomes one normalized tar: sorted members, no owner, directories
0750 and files 0640 (0750 when executable), the hardening issue's modes for a
site's docroot. Its sha256 "of the content" is a digest of the manifest (path,
type, mode, size, file digest or link target), so the same content always has
the same digest whenever it is packed.
"""

import gzip
import hashlib
import io
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from provisioner.errors import HostError, UserError, ValidationError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
GIT_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)")
# A git ref as `git check-ref-format` allows it, plus commit ids; no '..', no leading '-'.
_REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<![./])")
# Below this much content a high compression ratio is just text that compresses well.
RATIO_FLOOR = 1024 * 1024
MARKER = ".release-marker"
SHARED_FILE = ".shared"
# The same rule as config.website.shared.
SHARED_PATH = re.compile(r"(?!\.{1,2}(/|$))[A-Za-z0-9_.-]+(/(?!\.{1,2}(/|$))[A-Za-z0-9_.-]+)*")
DIR_MODE, FILE_MODE, EXEC_MODE = 0o750, 0o640, 0o750
CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_bytes: int
    max_ratio: float

    @classmethod
    def from_config(cls, config) -> "Limits":
        w = config.website
        return cls(w.max_files, w.max_bytes, w.max_ratio)


@dataclass(frozen=True)
class SourceSpec:
    location: str  # a local path or a git URL
    ref: str | None  # git only: branch, tag or commit
    kind: str  # archive | git

    def __str__(self) -> str:
        return self.location + (f"@{self.ref}" if self.ref else "")


@dataclass(frozen=True)
class Entry:
    path: str  # relative, POSIX
    type: str  # dir | file | link
    mode: int  # the normalized mode
    size: int = 0
    digest: str = ""  # sha256 of a file
    target: str = ""  # a link's target

    def manifest(self) -> str:
        return f"{self.type} {self.mode:04o} {self.size} {self.digest or self.target} {self.path}"


@dataclass
class Content:
    """A checked release tree on the controller."""

    root: Path
    spec: SourceSpec
    commit: str | None
    entries: list[Entry] = field(default_factory=list)
    marker: str | None = None  # the text of .release-marker, the health check looks for it
    shared: list[str] = field(default_factory=list)  # paths from the release's .shared file

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.type != "dir")

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def sha256(self) -> str:
        manifest = "".join(e.manifest() + "\n" for e in self.entries)
        return hashlib.sha256(manifest.encode("utf-8", "surrogateescape")).hexdigest()


def _refused(member: str, rule: str, source: str) -> ValidationError:
    return ValidationError([f"{member}: {rule}"], source=source)


# -- what the source is ------------------------------------------------------------

def parse_source(text: str) -> SourceSpec:
    """PATH (archive or git work tree) or GIT_URL, with an optional @REF at the end (git only)."""
    text = (text or "").strip()
    if not text:
        raise UserError("--source: required: an archive path, a git repository path or a git URL")
    location, ref = text, None
    if not Path(text).exists():
        # The ref is split off the part after the URL's host, so user@host is never a ref.
        if text.startswith(GIT_SCHEMES):
            scheme, _, rest = text.partition("://")
            host, slash, path = rest.partition("/")
            if "@" in path:
                path, _, ref = path.rpartition("@")
            location = f"{scheme}://{host}{slash}{path}"
        elif (scp := _SCP_LIKE.match(text)) is not None:
            head, path = text[:scp.end()], text[scp.end():]
            if "@" in path:
                path, _, ref = path.rpartition("@")
            location = head + path
        elif "@" in text:
            location, _, ref = text.rpartition("@")
    if ref is not None and not _REF.fullmatch(ref):
        raise UserError(f"--source: {ref!r} is not a git ref (branch, tag or commit: A-Z a-z 0-9 . _ / + -, "
                        f"no '..', not starting with '-')")
    is_url = location.startswith(GIT_SCHEMES) or _SCP_LIKE.match(location) is not None
    if is_url and url_has_password(location):
        raise UserError(f"--source: {CREDENTIAL_RULE}")
    if not is_url:
        path = Path(location)
        if not path.is_absolute():
            raise UserError(f"--source: {location!r} must be an absolute path on this machine or a git URL")
        if not path.exists():
            raise UserError(f"--source: {location} does not exist")
        if path.is_file():
            if not location.endswith(ARCHIVE_SUFFIXES):
                raise UserError(f"--source: {location} is not a .tar.gz, .tgz or .zip archive")
            if ref is not None:
                raise UserError(f"--source: an archive has no ref (@{ref}); only a git source has")
            return SourceSpec(location, None, "archive")
        if not ((path / ".git").exists() or (path / "HEAD").is_file()):
            raise UserError(f"--source: {location} is a directory but not a git repository")
    return SourceSpec(location, ref, "git")


# -- archives: inspected before anything is extracted --------------------------------

def _member_path(name: str, source: str) -> str:
    """The member's clean relative path, or the rule it breaks."""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _refused(repr(name), "control character in the name", source)
    if name.startswith("/") or re.match(r"[A-Za-z]:[\\/]", name) or name.startswith("\\"):
        raise _refused(name, "absolute path", source)
    if "\\" in name:
        raise _refused(name, "backslash in the name (a Windows path)", source)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refused(name, "path leaves the directory ('..')", source)
    return "/".join(parts)


def _link_inside(path: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    joined = os.path.normpath(os.path.join(os.path.dirname(path) or ".", target))
    return joined != ".." and not joined.startswith("../") and not os.path.isabs(joined)


def link_chain_problem(path: str, target: str, links: set[str]) -> str | None:
    """Why the link `path` -> `target` is refused once the other links are known, or None.

    The kernel resolves a target step by step: a `..` after a link goes up from where that
    link points, not from the link's own place, so "s/../.." can leave the tree although it
    reads as inside. Each step is walked here as the kernel would (no normpath); a target that
    goes through another link, or above the root at any step, is refused."""
    if not target:
        return "symlink with an empty target"
    if target.startswith("/"):
        return f"symlink points outside the directory ({target})"
    parts = [p for p in (os.path.dirname(path) or "").split("/") if p]
    steps = [p for p in target.split("/") if p not in ("", ".")]
    for number, part in enumerate(steps):
        if part == "..":
            if not parts:
                return f"symlink points outside the directory ({target})"
            parts.pop()
            continue
        parts.append(part)
        here = "/".join(parts)
        if here in links and number < len(steps) - 1:
            return f"symlink target goes through another symlink ({here}): link chains are not followed"
    return None


def check_link_chains(entries, source: str) -> None:
    """Every link of a manifest (entries with .path, .type, .target), held to link_chain_problem."""
    links = {e.path for e in entries if e.type == "link"}
    for entry in entries:
        if entry.type == "link":
            problem = link_chain_problem(entry.path, entry.target, links)
            if problem:
                raise _refused(entry.path, problem, source)


@dataclass
class _Member:
    path: str
    type: str  # dir | file | link (a hard link is refused)
    size: int = 0
    mode: int = 0o644
    target: str = ""
    ref: object = None  # the TarInfo or ZipInfo


class _Counter:
    """Counts members and bytes against the limits, as the archive is read."""

    def __init__(self, limits: Limits, source: str):
        self.limits, self.source = limits, source
        self.files = self.bytes = 0
        self.seen: dict[str, str] = {}
        self.parents: set[str] = set()  # directories earlier members were written below

    def add(self, member: _Member) -> None:
        if member.path == "" and member.type == "dir":
            return  # the archive's "./"
        if member.path == "":
            raise _refused(member.path or "(empty name)", "not a file name", self.source)
        if member.path in self.seen:
            raise _refused(member.path, "appears twice in the archive", self.source)
        # A member below a link would be written through it, wherever the link points.
        parent = PurePosixPath(member.path).parent
        while str(parent) != ".":
            if self.seen.get(str(parent)) in ("link", "hardlink", "file"):
                raise _refused(member.path, f"path goes through {parent}, which is not a directory", self.source)
            parent = parent.parent
        if member.type != "dir" and member.path in self.parents:
            # The directory exists by then (made for the earlier members); a link or file of
            # its name cannot be written, and would redirect whatever comes after it.
            raise _refused(member.path, f"is a {member.type} of the same name as a directory earlier members "
                                        f"are in", self.source)
        self.parents.update(str(p) for p in PurePosixPath(member.path).parents if str(p) != ".")
        self.seen[member.path] = member.type
        self.files += 1
        self.bytes += member.size
        if self.files > self.limits.max_files:
            raise _refused(member.path, f"more than {self.limits.max_files} files (website.max_files)", self.source)
        if self.bytes > self.limits.max_bytes:
            raise _refused(member.path, f"more than {self.limits.max_bytes} bytes uncompressed (website.max_bytes)",
                           self.source)


def _check_mode(member: _Member, source: str) -> None:
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        raise _refused(member.path, f"setuid or setgid bit (mode {member.mode & 0o7777:04o})", source)


def _check_link(member: _Member, source: str) -> None:
    if member.type in ("link", "hardlink"):
        target = member.target
        inside = (_link_inside(member.path, target) if member.type == "link"
                  else not target.startswith("/") and ".." not in target.split("/"))
        if not inside:
            kind = "symlink" if member.type == "link" else "hard link"
            raise _refused(member.path, f"{kind} points outside the directory ({target})", source)


class _CappedReader(io.RawIOBase):
    """A decompressed stream that refuses to give more than `cap` bytes (a bomb stops here)."""

    def __init__(self, stream, cap: int, compressed: int, limits: Limits, source: str):
        self.stream, self.cap, self.compressed, self.limits, self.source = stream, cap, compressed, limits, source
        self.read_total = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(len(buffer))
        self.read_total += len(data)
        if self.read_total > self.cap:
            raise _refused(Path(self.source).name, f"decompresses to more than {self.cap} bytes "
                                                   f"(website.max_bytes)", self.source)
        if self.read_total > RATIO_FLOOR and self.read_total / self.compressed > self.limits.max_ratio:
            raise _refused(Path(self.source).name, f"compression ratio over {self.limits.max_ratio:g} "
                                                   f"(website.max_ratio): a decompression bomb", self.source)
        buffer[:len(data)] = data
        return len(data)


def _tar_members(path: Path, limits: Limits) -> list[_Member]:
    source = str(path)
    size = max(path.stat().st_size, 1)
    # Headers and padding: 512 bytes a member at most three times over, plus the end blocks.
    cap = limits.max_bytes + 1536 * (limits.max_files + 2) + 20480
    counter, members = _Counter(limits, source), []
    try:
        with gzip.open(path, "rb") as raw:
            stream = io.BufferedReader(_CappedReader(raw, cap, size, limits, source), CHUNK)
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for info in archive:
                    name = _member_path(info.name, source)
                    if info.isdir():
                        kind = "dir"
                    elif info.isreg():
                        kind = "file"
                    elif info.issym():
                        kind = "link"
                    elif info.islnk():
                        kind = "hardlink"
                    elif info.ischr() or info.isblk():
                        raise _refused(name, "device file", source)
                    elif info.isfifo():
                        raise _refused(name, "FIFO (named pipe)", source)
                    else:
                        raise _refused(name, f"unsupported member type {info.type!r}", source)
                    member = _Member(name, kind, info.size if kind == "file" else 0, info.mode,
                                     info.linkname if kind in ("link", "hardlink") else "", info)
                    _check_mode(member, source)
                    _check_link(member, source)
                    if kind == "hardlink":
                        # Each hard link would be a full copy of its file, counted nowhere: refused
                        # outright (pack the file itself, or a symlink).
                        raise _refused(name, f"hard link ({info.linkname}): not supported, pack the file itself "
                                             f"or a symlink", source)
                    if kind == "link" and not member.target:
                        raise _refused(name, "symlink with an empty target", source)
                    counter.add(member)
                    members.append(member)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise _refused(path.name, f"not a readable .tar.gz archive ({err})", source) from None
    if counter.bytes > RATIO_FLOOR and counter.bytes / size > limits.max_ratio:
        raise _refused(path.name, f"compression ratio {counter.bytes / size:.0f} over {limits.max_ratio:g} "
                                  f"(website.max_ratio): a decompression bomb", source)
    check_link_chains(members, source)
    return members


def _zip_members(path: Path, limits: Limits) -> list[_Member]:
    source = str(path)
    counter, members, compressed = _Counter(limits, source), [], 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _member_path(info.filename, source)
                mode = (info.external_attr >> 16) & 0xFFFF
                kind_bits = stat.S_IFMT(mode)
                if info.is_dir() or kind_bits == stat.S_IFDIR:
                    kind = "dir"
                elif kind_bits == stat.S_IFLNK:
                    kind = "link"
                elif kind_bits in (stat.S_IFCHR, stat.S_IFBLK):
                    raise _refused(name, "device file", source)
                elif kind_bits == stat.S_IFIFO:
                    raise _refused(name, "FIFO (named pipe)", source)
                elif kind_bits in (0, stat.S_IFREG):
                    kind = "file"
                else:
                    raise _refused(name, f"unsupported member type (mode {mode:o})", source)
                if kind == "link":
                    if info.file_size > 4096:
                        raise _refused(name, "symlink target longer than 4096 bytes", source)
                    target = archive.read(info).decode("utf-8", "surrogateescape")
                else:
                    target = ""
                member = _Member(name, kind, info.file_size if kind == "file" else 0,
                                 (mode & 0o7777) or (0o755 if kind == "dir" else 0o644), target, info)
                _check_mode(member, source)
                _check_link(member, source)
                if kind == "link" and not target:
                    raise _refused(name, "symlink with an empty target", source)
                if kind == "file" and info.file_size > RATIO_FLOOR \
                        and info.file_size / max(info.compress_size, 1) > limits.max_ratio:
                    raise _refused(name, f"compression ratio {info.file_size / max(info.compress_size, 1):.0f} "
                                         f"over {limits.max_ratio:g} (website.max_ratio): a decompression bomb",
                                   source)
                compressed += info.compress_size
                counter.add(member)
                members.append(member)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
        raise _refused(path.name, f"not a readable .zip archive ({err})", source) from None
    if counter.bytes > RATIO_FLOOR and counter.bytes / max(compressed, 1) > limits.max_ratio:
        raise _refused(path.name, f"compression ratio {counter.bytes / max(compressed, 1):.0f} over "
                                  f"{limits.max_ratio:g} (website.max_ratio): a decompression bomb", source)
    check_link_chains(members, source)
    return members


def inspect_archive(path: Path, limits: Limits) -> list[_Member]:
    """Every member, checked; raises ValidationError (member and rule) at the first refusal."""
    path = Path(path)
    if path.name.endswith(".zip"):
        return _zip_members(path, limits)
    return _tar_members(path, limits)


def _write(fileobj, dest: Path, declared: int, member: str, source: str) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := fileobj.read(CHUNK):
            written += len(chunk)
            if written > declared:
                # A zip member's declared size can lie; the limits were checked against it.
                raise _refused(member, f"holds more than its declared {declared} bytes", source)
            out.write(chunk)


def extract_archive(path: Path, dest: Path, limits: Limits) -> None:
    """Inspect, then extract into the empty directory `dest` with our own writer (never the archive's).

    The inspection refuses what cannot be written; an OSError still raised by an odd archive
    becomes a ValidationError naming the member, never a traceback."""
    current = {"member": Path(path).name}
    try:
        _extract(Path(path), dest, limits, current)
    except OSError as err:
        raise _refused(current["member"], f"cannot be extracted as a plain file, directory or symlink "
                                          f"({err.strerror or err})", str(path)) from None


def _extract(path: Path, dest: Path, limits: Limits, current: dict) -> None:
    source = str(path)
    members = inspect_archive(path, limits)
    dest.mkdir(mode=0o700, exist_ok=True)
    by_path = {m.path: m for m in members}

    def target(m):
        current["member"] = m.path
        out = dest / m.path
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return out

    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for m in members:
                if m.type == "dir":
                    target(m).mkdir(mode=0o700, exist_ok=True)
                elif m.type == "link":
                    os.symlink(m.target, target(m))
                else:
                    with archive.open(m.ref) as data:
                        _write(data, target(m), m.size, m.path, source)
                    os.chmod(dest / m.path, m.mode & 0o777)
        return
    # tar.gz: read again from the start, through the same cap (the data are not trusted twice).
    size = max(path.stat().st_size, 1)
    cap = limits.max_bytes + 1536 * (limits.max_files + 2) + 20480
    with gzip.open(path, "rb") as raw:
        stream = io.BufferedReader(_CappedReader(raw, cap, size, limits, source), CHUNK)
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for info in archive:
                m = by_path.get(_member_path(info.name, source))
                if m is None:
                    continue  # the archive's "./"
                if m.type == "dir":
                    target(m).mkdir(mode=0o700, exist_ok=True)
                elif m.type == "link":
                    os.symlink(m.target, target(m))
                else:
                    _write(archive.extractfile(info), target(m), m.size, m.path, source)
                    os.chmod(dest / m.path, m.mode & 0o777)


# -- git ------------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
CREDENTIAL_RULE = ("a password or token in a git URL (user:secret@) would be kept in plans, events and "
                   "records: use an SSH key or a git credential helper")


def url_has_password(location: str) -> bool:
    """A scheme://user:secret@host URL (the secret would reach plans, events and records)."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return False
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    return bool(at) and ":" in userinfo


def redact(text: str) -> str:
    """git's messages name the URL; whatever stands before an @ in it is not repeated."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _git(args: list[str], timeout: int, cwd: Path | None = None) -> str:
    # Hooks and fsmonitor off, no user or system config (an include, a credential helper or an
    # alias there is not ours), file transport allowed for local paths, never a password prompt.
    command = ["git", "-c", "protocol.file.allow=always", "-c", "protocol.ext.allow=never",
               "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "safe.directory=*",
               "-c", "advice.detachedHead=false", *args]
    with tempfile.TemporaryDirectory(prefix="provisioner-git-home-") as home:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
               "HOME": home, "XDG_CONFIG_HOME": home, "GIT_CONFIG_GLOBAL": "/dev/null",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}
        if os.environ.get("SSH_AUTH_SOCK"):
            env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
        try:
            done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise HostError(f"git {args[0]} took more than {timeout} s (website.command_timeout)") from None
    if done.returncode != 0:
        stderr = redact(done.stderr.decode("utf-8", "replace").strip())
        raise HostError(f"git {args[0]} failed: {stderr[-300:]}")
    return done.stdout.decode("utf-8", "surrogateescape")


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# git's tree modes and what a release may hold of them.
_GIT_KINDS = {"040000": "dir", "100644": "file", "100755": "file", "120000": "link"}


def check_git_tree(dest: Path, commit: str, limits: Limits, source: str, timeout: int) -> None:
    """The commit's tree as git lists it, held to the limits and rules BEFORE anything is checked out."""
    listing = _git(["ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit], timeout, cwd=dest)
    entries, links, files, size = [], [], 0, 0
    for record in filter(None, listing.split("\0")):
        meta, _, name = record.partition("\t")
        mode, kind, obj, length = meta.split()
        rel = _member_path(name, source)
        if mode == "160000":
            raise _refused(rel, "git submodule: not supported, the release is one repository's tree", source)
        if mode not in _GIT_KINDS:
            raise _refused(rel, f"unsupported git entry (mode {mode})", source)
        files += 1
        if files > limits.max_files:
            raise _refused(rel, f"more than {limits.max_files} files (website.max_files)", source)
        if _GIT_KINDS[mode] == "file":
            size += int(length)
            if size > limits.max_bytes:
                raise _refused(rel, f"more than {limits.max_bytes} bytes (website.max_bytes)", source)
        if _GIT_KINDS[mode] == "link":
            if int(length) > 4096:
                raise _refused(rel, "symlink target longer than 4096 bytes", source)
            links.append((rel, obj))
        entries.append(Entry(rel, _GIT_KINDS[mode], 0))
    targets = {}
    for rel, obj in links:
        targets[rel] = _git(["cat-file", "blob", obj], timeout, cwd=dest)
    entries = [Entry(e.path, e.type, 0, target=targets.get(e.path, "")) for e in entries]
    for entry in entries:
        if entry.type == "link" and entry.target and not _link_inside(entry.path, entry.target):
            raise _refused(entry.path, f"symlink points outside the directory ({entry.target})", source)
    check_link_chains(entries, source)


def fetch_git(spec: SourceSpec, dest: Path, timeout: int, limits: Limits | None = None) -> str:
    """Clone without checkout, check the tree, check out the ref (branch, tag or commit) detached: the commit."""
    location = spec.location
    if location.startswith("-"):
        raise UserError(f"--source: {location!r} must not start with '-'")
    if url_has_password(location):
        raise UserError(f"--source: {CREDENTIAL_RULE}")
    _git(["clone", "--no-checkout", "--quiet", "--", location, str(dest)], timeout)
    if limits is not None and _dir_bytes(dest / ".git") > limits.max_bytes:
        raise _refused(str(spec), f"the repository (.git) is more than {limits.max_bytes} bytes (website.max_bytes)",
                       str(spec))
    if spec.ref is None:
        candidates = ["HEAD"]
    else:
        candidates = [f"refs/remotes/origin/{spec.ref}", f"refs/tags/{spec.ref}", spec.ref]
    commit = None
    for candidate in candidates:
        try:
            commit = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"],
                          timeout, cwd=dest).strip()
            break
        except HostError:
            continue
    if not commit:
        raise UserError(f"--source: {spec.location} has no branch, tag or commit {spec.ref!r}")
    if limits is not None:
        check_git_tree(dest, commit, limits, str(spec), timeout)
    _git(["checkout", "--quiet", "--detach", commit], timeout, cwd=dest)
    return commit


# -- trees: the rules again, and the normalized entries ----------------------------------

def check_tree(root: Path, limits: Limits, source: str, skip_git: bool = False) -> list[Entry]:
    """Walk the tree without following links; every entry checked and normalized, sorted."""
    entries: list[Entry] = []
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        if skip_git and rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames[:] = [f for f in filenames if f != ".git"]
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            _member_path(rel, source)
            info = os.lstat(full)
            if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                raise _refused(rel, f"setuid or setgid bit (mode {stat.S_IMODE(info.st_mode):04o})", source)
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(full)
                if not _link_inside(rel, target):
                    raise _refused(rel, f"symlink points outside the directory ({target})", source)
                entry = Entry(rel, "link", 0o777, target=target)
            elif stat.S_ISDIR(info.st_mode):
                entry = Entry(rel, "dir", DIR_MODE)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256()
                with open(full, "rb") as data:
                    while chunk := data.read(CHUNK):
                        digest.update(chunk)
                mode = EXEC_MODE if info.st_mode & 0o111 else FILE_MODE
                entry = Entry(rel, "file", mode, info.st_size, digest.hexdigest())
                size += info.st_size
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                raise _refused(rel, "device file", source)
            elif stat.S_ISFIFO(info.st_mode):
                raise _refused(rel, "FIFO (named pipe)", source)
            else:
                raise _refused(rel, "socket or other special file", source)
            files += 1
            if files > limits.max_files:
                raise _refused(rel, f"more than {limits.max_files} files (website.max_files)", source)
            if size > limits.max_bytes:
                raise _refused(rel, f"more than {limits.max_bytes} bytes (website.max_bytes)", source)
            entries.append(entry)
    check_link_chains(entries, source)
    return sorted(entries, key=lambda e: e.path)


def _marker(root: Path, entries: list[Entry]) -> str | None:
    entry = next((e for e in entries if e.path == MARKER and e.type == "file"), None)
    if entry is None:
        return None
    text = (root / MARKER).read_bytes()[:4096].decode("utf-8", "replace").strip().splitlines()
    return text[0].strip()[:200] if text and text[0].strip() else None


def _shared(root: Path, entries: list[Entry], source: str) -> list[str]:
    entry = next((e for e in entries if e.path == SHARED_FILE and e.type == "file"), None)
    if entry is None:
        return []
    paths = []
    for number, line in enumerate((root / SHARED_FILE).read_bytes()[:65536].decode("utf-8", "replace")
                                  .splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not SHARED_PATH.fullmatch(line) or len(line) > 200 or line in (SHARED_FILE, MARKER):
            raise _refused(f"{SHARED_FILE}:{number}", f"{line!r} is not a relative path inside the release "
                                                      f"(segments of A-Z a-z 0-9 '.', '_', '-', no '..')", source)
        paths.append(line)
    return sorted(set(paths))


def fetch(spec: SourceSpec, workdir: Path, limits: Limits, timeout: int) -> Content:
    """Fetch the source into `workdir` (private, empty) and check it: the Content to deploy."""
    tree = workdir / "tree"
    commit = None
    if spec.kind == "archive":
        extract_archive(Path(spec.location), tree, limits)
        entries = check_tree(tree, limits, spec.location)
    else:
        commit = fetch_git(spec, tree, timeout, limits)
        entries = check_tree(tree, limits, str(spec), skip_git=True)
    return Content(tree, spec, commit, entries, _marker(tree, entries), _shared(tree, entries, str(spec)))


def bundle(content: Content, out: Path, mtime: int) -> str:
    """Write the normalized tar of the content (no owner, normalized modes): its file's sha256."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in content.entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = entry.mode, mtime, 0, 0, "", ""
            if entry.type == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif entry.type == "link":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                archive.addfile(info)
            else:
                info.size = entry.size
                with open(content.root / entry.path, "rb") as data:
                    archive.addfile(info, data)
    digest = hashlib.sha256()
    with open(out, "rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def shared_path_problems(entries: list[Entry], paths: list[str]) -> list[str]:
    """Shared paths with a symlink of the release on the way to them (the stage role would move
    or remove through it): one problem each, naming the path and the link."""
    links = {e.path for e in entries if e.type == "link"}
    problems = []
    for path in paths:
        parents = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
        through = next((p for p in parents if p in links), None)
        if through is not None:
            problems.append(f"shared path {path}: {through} is a symlink in the release; a shared path "
                            f"must not go through a link")
    return problems


def local_source_problem(spec: SourceSpec, roots: list[str]) -> str | None:
    """From a request, a local path (or file:// URL) must be under one of website.source_roots,
    symlinks resolved: or a request could deploy any file the controller's user can read."""
    location = spec.location
    if location.startswith("file://"):
        location = location[len("file://"):]
    elif location.startswith(GIT_SCHEMES) or _SCP_LIKE.match(location) is not None:
        return None
    if not roots:
        return (f"{location}: a request's source on this machine is accepted only under website.source_roots, "
                f"and none is configured (deploy it with `provision website deploy`, or set the roots)")
    real = os.path.realpath(location)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip("/") + "/"):
            return None
    return f"{location}: not under website.source_roots ({', '.join(roots)}), symlinks resolved"
