"""A release's content: archives and git trees checked before anything is extracted or copied."""

import gzip
import io
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from provisioner.errors import HostError, UserError, ValidationError
from provisioner.website import source
from provisioner.website.source import Limits, SourceSpec

LIMITS = Limits(max_files=50, max_bytes=8 * 1024 * 1024, max_ratio=100)


def _tar(path: Path, members) -> Path:
    """members: (name, kind, data_or_target, mode)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, kind, value, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "file":
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = value if kind in ("sym", "hard") else ""
            archive.addfile(info)
    return path


def _zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, kind, value, mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            kind_bits = {"file": stat.S_IFREG, "sym": stat.S_IFLNK, "dir": stat.S_IFDIR, "chr": stat.S_IFCHR,
                         "fifo": stat.S_IFIFO}[kind]
            info.external_attr = (kind_bits | mode) << 16
            archive.writestr(info, value if isinstance(value, bytes) else value.encode())
    return path


GOOD = [("index.html", "file", b"<h1>ok</h1>", 0o644), ("assets", "dir", b"", 0o755),
        ("assets/app.js", "file", b"console.log(1)", 0o600), ("run.sh", "file", b"#!/bin/sh\n", 0o755),
        ("home.html", "sym", "index.html", 0o777), (".release-marker", "file", b"release-42\n", 0o644)]

MALICIOUS_TAR = {
    "path leaves the directory": [("../evil.php", "file", b"x", 0o644)],
    "deep escape": [("a/../../evil.php", "file", b"x", 0o644)],
    "absolute path": [("/etc/cron.d/evil", "file", b"x", 0o644)],
    "symlink points outside": [("etc", "sym", "../../../etc", 0o777)],
    "absolute symlink": [("passwd", "sym", "/etc/passwd", 0o777)],
    "hard link points outside": [("shadow", "hard", "/etc/shadow", 0o644)],
    "device file": [("null", "chr", b"", 0o666)],
    "block device": [("sda", "blk", b"", 0o660)],
    "fifo": [("pipe", "fifo", b"", 0o644)],
    "setuid": [("tool", "file", b"x", 0o4755)],
    "setgid": [("tool", "file", b"x", 0o2755)],
    "through a link": [("up", "sym", "assets", 0o777), ("up/x.php", "file", b"x", 0o644)],
}
RULES = {
    "path leaves the directory": "path leaves the directory", "deep escape": "path leaves the directory",
    "absolute path": "absolute path", "symlink points outside": "symlink points outside",
    "absolute symlink": "symlink points outside", "hard link points outside": "hard link points outside",
    "device file": "device file", "block device": "device file", "fifo": "FIFO", "setuid": "setuid or setgid",
    "setgid": "setuid or setgid", "through a link": "which is not a directory",
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS_TAR))
def test_each_malicious_tar_is_refused_before_anything_is_extracted(tmp_path, kind):
    archive = _tar(tmp_path / "site.tar.gz", GOOD[:2] + MALICIOUS_TAR[kind])
    dest = tmp_path / "out"
    with pytest.raises(ValidationError) as err:
        source.extract_archive(archive, dest, LIMITS)
    assert RULES[kind] in str(err.value)
    assert MALICIOUS_TAR[kind][-1][0].lstrip("/") in str(err.value)  # names the member
    assert not dest.exists()


MALICIOUS_ZIP = {
    "path leaves the directory": [("../evil.php", "file", b"x", 0o644)],
    "absolute path": [("/var/www/evil.php", "file", b"x", 0o644)],
    "windows absolute path": [("C:/evil.php", "file", b"x", 0o644)],
    "symlink points outside": [("etc", "sym", "../../etc", 0o777)],
    "device file": [("null", "chr", b"", 0o666)],
    "fifo": [("pipe", "fifo", b"", 0o644)],
    "setuid": [("tool", "file", b"x", 0o4755)],
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS_ZIP))
def test_each_malicious_zip_is_refused(tmp_path, kind):
    archive = _zip(tmp_path / "site.zip", GOOD[:2] + MALICIOUS_ZIP[kind])
    dest = tmp_path / "out"
    with pytest.raises(ValidationError) as err:
        source.extract_archive(archive, dest, LIMITS)
    rule = {"windows absolute path": "absolute path", "fifo": "FIFO", "setuid": "setuid or setgid"}.get(kind, kind)
    assert rule in str(err.value)
    assert not dest.exists()


def test_too_many_files_and_too_many_bytes(tmp_path):
    many = [(f"f{i}.txt", "file", b"x", 0o644) for i in range(LIMITS.max_files + 1)]
    with pytest.raises(ValidationError, match=r"f50.txt: more than 50 files \(website.max_files\)"):
        source.inspect_archive(_tar(tmp_path / "many.tar.gz", many), LIMITS)
    with pytest.raises(ValidationError, match="more than 50 files"):
        source.inspect_archive(_zip(tmp_path / "many.zip", many), LIMITS)
    small = Limits(max_files=50, max_bytes=1000, max_ratio=1000)
    big = [("a.bin", "file", os.urandom(600), 0o644), ("b.bin", "file", os.urandom(600), 0o644)]
    with pytest.raises(ValidationError, match=r"b.bin: more than 1000 bytes uncompressed \(website.max_bytes\)"):
        source.inspect_archive(_tar(tmp_path / "big.tar.gz", big), small)
    with pytest.raises(ValidationError, match="more than 1000 bytes"):
        source.inspect_archive(_zip(tmp_path / "big.zip", big), small)


def test_compression_bombs_are_refused(tmp_path):
    zeros = b"\0" * (4 * 1024 * 1024)
    with pytest.raises(ValidationError, match="compression ratio .* a decompression bomb"):
        source.inspect_archive(_tar(tmp_path / "bomb.tar.gz", [("zeros", "file", zeros, 0o644)]), LIMITS)
    with pytest.raises(ValidationError, match=r"zeros: compression ratio .* \(website.max_ratio\)"):
        source.inspect_archive(_zip(tmp_path / "bomb.zip", [("zeros", "file", zeros, 0o644)]), LIMITS)
    # Many members, each too small to count alone, are a bomb together.
    parts = [(f"z{i}", "file", b"\0" * 600000, 0o644) for i in range(3)]
    with pytest.raises(ValidationError, match=r"parts.zip: compression ratio \d+ over 100"):
        source.inspect_archive(_zip(tmp_path / "parts.zip", parts), LIMITS)
    # Small text compresses well and is no bomb: the ratio counts past 1 MiB of content.
    source.inspect_archive(_tar(tmp_path / "text.tar.gz", [("a.txt", "file", b"a" * 100000, 0o644)]), LIMITS)


def test_a_gzip_bomb_is_stopped_while_reading(tmp_path):
    """A tar.gz whose stream inflates past the cap is cut off before the whole stream is read."""
    path = tmp_path / "stream.tar.gz"
    with gzip.open(path, "wb") as out:
        info = tarfile.TarInfo("huge")
        info.size = 64 * 1024 * 1024
        out.write(info.tobuf())
        chunk = b"\0" * (1 << 20)
        for _ in range(64):
            out.write(chunk)
    limits = Limits(max_files=10, max_bytes=1024 * 1024 * 1024, max_ratio=100)
    with pytest.raises(ValidationError, match="compression ratio over 100 .*decompression bomb"):
        source.inspect_archive(path, limits)


def test_a_good_archive_is_extracted_and_bundled_with_the_isolation_modes(tmp_path):
    for maker, name in ((_tar, "site.tar.gz"), (_zip, "site.zip")):
        work = tmp_path / name.replace(".", "-")
        work.mkdir()
        archive = maker(tmp_path / name, GOOD + [(".shared", "file", b"# kept\nuploads\nconfig/.env\n", 0o644)])
        content = source.fetch(SourceSpec(str(archive), None, "archive"), work, LIMITS, 60)
        modes = {e.path: (e.type, e.mode) for e in content.entries}
        assert modes["index.html"] == ("file", 0o640)
        assert modes["assets/app.js"] == ("file", 0o640)
        assert modes["run.sh"] == ("file", 0o750)
        assert modes["assets"] == ("dir", 0o750)
        assert modes["home.html"] == ("link", 0o777)
        assert content.marker == "release-42"
        assert content.shared == ["config/.env", "uploads"]
        assert content.files == 6 and content.bytes == sum(len(v) for n, k, v, m in GOOD if k == "file") + 27
        out = work / "bundle.tar"
        source.bundle(content, out, mtime=1_700_000_000)
        with tarfile.open(out) as bundled:
            members = {m.name: m for m in bundled.getmembers()}
        assert members["index.html"].mode == 0o640 and members["index.html"].uid == 0
        assert members["index.html"].uname == "" and members["home.html"].linkname == "index.html"
        assert oct(stat.S_IMODE(out.stat().st_mode)) == "0o600"
    # The same content has the same sha256 whichever archive carried it.
    (tmp_path / "x1").mkdir(), (tmp_path / "x2").mkdir()
    tar_content = source.fetch(SourceSpec(str(tmp_path / "site.tar.gz"), None, "archive"), tmp_path / "x1",
                               LIMITS, 60)
    zip_content = source.fetch(SourceSpec(str(tmp_path / "site.zip"), None, "archive"), tmp_path / "x2",
                               LIMITS, 60)
    assert tar_content.sha256 == zip_content.sha256


def test_a_bad_shared_file_is_refused(tmp_path):
    archive = _tar(tmp_path / "s.tar.gz", [(".shared", "file", b"uploads\n../../etc\n", 0o644)])
    with pytest.raises(ValidationError, match=r"\.shared:2: '../../etc' is not a relative path"):
        source.fetch(SourceSpec(str(archive), None, "archive"), tmp_path, LIMITS, 60)


def test_parse_source(tmp_path):
    archive = _tar(tmp_path / "site.tgz", GOOD)
    assert source.parse_source(str(archive)) == SourceSpec(str(archive), None, "archive")
    assert source.parse_source("https://git.example.go.id/dinkes/web.git@v1.2") == \
        SourceSpec("https://git.example.go.id/dinkes/web.git", "v1.2", "git")
    assert source.parse_source("https://user@git.example.go.id/web.git") == \
        SourceSpec("https://user@git.example.go.id/web.git", None, "git")
    assert source.parse_source("git@git.example.go.id:dinkes/web.git@feature/x") == \
        SourceSpec("git@git.example.go.id:dinkes/web.git", "feature/x", "git")
    assert source.parse_source("git@git.example.go.id:dinkes/web.git").ref is None
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    assert source.parse_source(f"{repo}@main") == SourceSpec(str(repo), "main", "git")
    for bad, rule in ((f"{archive}@v1", "an archive has no ref"), ("relative.tar.gz", "absolute path"),
                      (str(tmp_path / "none.tar.gz"), "does not exist"), (f"{repo}@a..b", "is not a git ref"),
                      (f"{repo}@-x", "is not a git ref"), (str(tmp_path), "not a git repository"), ("", "required")):
        with pytest.raises(UserError, match=rule):
            source.parse_source(bad)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a .tar.gz, .tgz or .zip"):
        source.parse_source(str(tmp_path / "notes.txt"))


def _git(repo: Path, *args) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.go.id", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.go.id", "PATH": os.environ["PATH"], "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "index.html").write_text("one")
    (repo / ".release-marker").write_text("v1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    _git(repo, "tag", "v1")
    (repo / "index.html").write_text("two")
    (repo / ".release-marker").write_text("v2\n")
    _git(repo, "commit", "-qam", "two")
    _git(repo, "checkout", "-qb", "next")
    (repo / "index.html").write_text("three")
    (repo / ".release-marker").write_text("v3\n")
    _git(repo, "commit", "-qam", "three")
    _git(repo, "checkout", "-q", "main")
    return repo


def test_git_refs_branch_tag_commit_and_head(tmp_path, repo):
    first = _git(repo, "rev-parse", "v1")
    cases = {"v1": ("one", first), "next": ("three", _git(repo, "rev-parse", "next")),
             first[:10]: ("one", first), None: ("two", _git(repo, "rev-parse", "main"))}
    for index, (ref, (text, commit)) in enumerate(cases.items()):
        spec = source.parse_source(f"{repo}@{ref}" if ref else str(repo))
        work = tmp_path / f"w{index}"
        work.mkdir()
        content = source.fetch(spec, work, LIMITS, 60)
        assert (content.root / "index.html").read_text() == text
        assert content.commit == commit
        assert ".git" not in {e.path.split("/")[0] for e in content.entries}
        assert content.marker == {"one": "v1", "two": "v2", "three": "v3"}[text]
    with pytest.raises(UserError, match="has no branch, tag or commit 'nope'"):
        source.fetch(source.parse_source(f"{repo}@nope"), tmp_path / "w9", LIMITS, 60)
    with pytest.raises(HostError, match="git clone failed"):
        source.fetch(SourceSpec(str(tmp_path / "missing"), None, "git"), tmp_path / "w8", LIMITS, 60)


def test_a_git_tree_is_held_to_the_same_rules(tmp_path, repo):
    os.symlink("/etc/passwd", repo / "passwd")
    _git(repo, "add", "passwd")
    _git(repo, "commit", "-qm", "link")
    with pytest.raises(ValidationError, match=r"passwd: symlink points outside the directory \(/etc/passwd\)"):
        source.fetch(source.parse_source(str(repo)), tmp_path / "w", LIMITS, 60)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "tool").write_text("x")
    os.chmod(tree / "tool", 0o4755)
    with pytest.raises(ValidationError, match="tool: setuid or setgid bit"):
        source.check_tree(tree, LIMITS, "tree")
    os.chmod(tree / "tool", 0o644)
    os.mkfifo(tree / "pipe")
    with pytest.raises(ValidationError, match="pipe: FIFO"):
        source.check_tree(tree, LIMITS, "tree")


@pytest.mark.parametrize("members, rule", [
    # Each link reads as inside; through s, "up" resolves four levels above the root.
    ([("a/b/c", "dir", b"", 0o755), ("a/b/c/s", "sym", "../..", 0o777),
      ("up", "sym", "a/b/c/s/../../../..", 0o777)], r"up: symlink target goes through another symlink \(a/b/c/s\)"),
    ([("f", "file", b"x" * 9000, 0o644)] + [(f"h{i}", "hard", "f", 0o644) for i in range(3)],
     r"h0: hard link \(f\): not supported"),
    ([("h", "hard", "later", 0o644), ("later", "file", b"x", 0o644)], r"h: hard link \(later\): not supported"),
    ([("empty", "sym", "", 0o777)], "empty: symlink with an empty target"),
    ([("a/x", "file", b"x", 0o644), ("a", "sym", "assets", 0o777)],
     "a: is a link of the same name as a directory earlier members are in"),
])
def test_odd_archives_are_refused_naming_the_member_before_extraction(tmp_path, members, rule):
    archive = _tar(tmp_path / "site.tar.gz", GOOD[:2] + members)
    dest = tmp_path / "out"
    with pytest.raises(ValidationError, match=rule):
        source.extract_archive(archive, dest, LIMITS)
    assert not dest.exists()


def test_a_link_chain_and_an_empty_link_in_a_zip_are_refused(tmp_path):
    chain = _zip(tmp_path / "c.zip", [("a/", "dir", b"", 0o755), ("a/s", "sym", "..", 0o777),
                                       ("up", "sym", "a/s/..", 0o777)])
    with pytest.raises(ValidationError, match=r"up: symlink target goes through another symlink \(a/s\)"):
        source.inspect_archive(chain, LIMITS)
    empty = _zip(tmp_path / "e.zip", [("e", "sym", "", 0o777)])
    with pytest.raises(ValidationError, match="e: symlink with an empty target"):
        source.inspect_archive(empty, LIMITS)
    # A link to a link (not through it) stays allowed: each is checked from its own place.
    fine = _zip(tmp_path / "f.zip", [("index.html", "file", b"x", 0o644), ("a", "sym", "index.html", 0o777),
                                      ("b", "sym", "a", 0o777)])
    assert [m.path for m in source.inspect_archive(fine, LIMITS)] == ["index.html", "a", "b"]


def test_a_git_tree_is_checked_before_checkout(tmp_path, repo):
    # Sizes from git's listing: nothing checked out when the tree is too big.
    (repo / "big.txt").write_bytes(b"a" * (2 * 1024 * 1024))
    _git(repo, "add", "big.txt")
    _git(repo, "commit", "-qm", "big")
    work = tmp_path / "w1"
    work.mkdir()
    with pytest.raises(ValidationError, match="big.txt: more than 1048576 bytes"):
        source.fetch(source.parse_source(str(repo)), work, Limits(50, 1024 * 1024, 100), 60)
    assert sorted(p.name for p in (work / "tree").iterdir()) == [".git"]
    # A submodule (gitlink) is refused.
    _git(repo, "update-index", "--add", "--cacheinfo", f"160000,{_git(repo, 'rev-parse', 'v1')},vendor/lib")
    _git(repo, "commit", "-qm", "submodule")
    with pytest.raises(ValidationError, match="vendor/lib: git submodule: not supported"):
        source.fetch(source.parse_source(str(repo)), tmp_path / "w2", LIMITS, 60)


def test_a_git_link_chain_and_a_big_repository_are_refused(tmp_path, repo):
    (repo / "a" / "b").mkdir(parents=True)
    os.symlink("..", repo / "a" / "b" / "s")
    os.symlink("a/b/s/../..", repo / "up")
    _git(repo, "add", "a", "up")
    _git(repo, "commit", "-qm", "chain")
    work = tmp_path / "w1"
    work.mkdir()
    with pytest.raises(ValidationError, match=r"up: symlink target goes through another symlink \(a/b/s\)"):
        source.fetch(source.parse_source(str(repo)), work, LIMITS, 60)
    assert not (work / "tree" / "up").exists() and not os.path.islink(work / "tree" / "up")
    other = tmp_path / "noise"
    other.mkdir()
    _git(other, "init", "-q", "-b", "main")
    (other / "noise.bin").write_bytes(os.urandom(300 * 1024))
    _git(other, "add", ".")
    _git(other, "commit", "-qm", "noise")
    with pytest.raises(ValidationError, match=r"the repository \(.git\) is more than 204800 bytes"):
        source.fetch(source.parse_source(str(other)), tmp_path / "w2", Limits(50, 200 * 1024, 100), 60)


def test_a_password_in_a_git_url_is_refused_and_urls_in_errors_are_redacted():
    for url in ("https://deploy:glpat-SECRET@git.example.go.id/web/dinkes.git@v1.2",
                "ssh://git:SECRET@git.example.go.id/web.git"):
        with pytest.raises(UserError, match="use an SSH key or a git credential helper") as caught:
            source.parse_source(url)
        assert "SECRET" not in str(caught.value)
    assert source.parse_source("ssh://git@git.example.go.id/web.git").location == "ssh://git@git.example.go.id/web.git"
    assert source.redact("fatal: unable to access 'https://u:SECRET@git.example.go.id/x/': 403") == \
        "fatal: unable to access 'https://***@git.example.go.id/x/': 403"


def test_git_ignores_the_users_own_configuration(tmp_path, repo, monkeypatch):
    # A global config that rewrites every file:// URL would make the clone fail if git read it.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text('[url "file:///nonexistent/"]\n\tinsteadOf = file://\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    content = source.fetch(source.parse_source(f"file://{repo}"), tmp_path, LIMITS, 60)
    assert (content.root / "index.html").read_text() == "two"


def test_a_request_source_with_a_password_or_outside_the_roots_is_refused_at_submit():
    from datetime import date

    from provisioner.config import REPO_ROOT, Config, Website, default_offices
    from provisioner.request import validate

    text = (REPO_ROOT / "examples" / "tarakan-website-dinkes.yaml").read_text()
    old = "source: /srv/konten/dinkes-1.0.tar.gz"
    assert old in text

    def rules(source, config):
        with pytest.raises(ValidationError) as err:
            validate(text.replace(old, f"source: {source}").encode(), config, today=date(2024, 9, 30))
        return " ".join(p.rule for p in err.value.problems if p.field == "website.source")

    plain = Config(offices=default_offices())
    assert "use an SSH key or a git credential helper" in rules("https://deploy:glpat-x@git.example.go.id/w.git", plain)
    rooted = Config(offices=default_offices(), website=Website(source_roots=["/srv/konten"]))
    assert validate(text.encode(), rooted, today=date(2024, 9, 30)).website.source == "/srv/konten/dinkes-1.0.tar.gz"
    assert "under website.source_roots (/srv/konten)" in rules("/srv/konten-lain/a.tar.gz", rooted)
    assert "under website.source_roots" in rules("file:///etc/web@main", rooted)
    # No roots configured: accepted at submit; the installation step refuses it (test_website_deploy).
    assert validate(text.encode(), plain, today=date(2024, 9, 30)).website.source.startswith("/srv/konten/")
