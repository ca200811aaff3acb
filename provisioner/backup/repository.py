"""The one module that runs restic: a repository, its password, and the commands on it.

The password reaches restic only through the subprocess environment
(RESTIC_PASSWORD), never argv, a log or an event. An sftp: repository is
reached with the configured key and known_hosts only (no agent, no unknown host
keys), and a lab address only while the lab is up.
"""

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from provisioner.errors import ConfigError, HostError
from provisioner.lab import guard

RESTIC = "restic"
_SFTP = re.compile(r"sftp:(?P<user>[a-z_][a-z0-9_-]*)@(?P<host>[A-Za-z0-9.-]+):(?P<path>/\S*)")
# What restic 0.14 says when the repository is not there yet (no config file).
_MISSING = ("unable to open config file", "Is there a repository at the following location?")
# Environment of restic: the caller's, minus anything that could point it at another
# repository or password than the one given here.
_DROPPED_ENV = ("RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE",
                "RESTIC_PASSWORD_COMMAND")
CHUNK = 1024 * 1024


class ResticError(HostError):
    """restic failed; the message names the repository and restic's own words (never the password)."""


@dataclass(frozen=True)
class Policy:
    """Retention: snapshots kept per site and kind (restic groups them by host and path)."""

    daily: int
    weekly: int
    monthly: int

    def flags(self) -> list[str]:
        return ["--keep-daily", str(self.daily), "--keep-weekly", str(self.weekly),
                "--keep-monthly", str(self.monthly)]


class Repository:
    def __init__(self, url: str, password: str, ssh_key: Path | None = None, known_hosts: Path | None = None,
                 timeout: float = 6 * 3600, cache_dir: Path | None = None):
        self.url = url
        self._password = password
        self.ssh_key = ssh_key
        self.known_hosts = known_hosts
        self.timeout = timeout
        self.cache_dir = cache_dir
        self.sftp = _SFTP.fullmatch(url)

    def __repr__(self) -> str:  # never the password
        return f"Repository({self.url!r})"

    @property
    def host(self) -> str | None:
        return self.sftp.group("host") if self.sftp else None

    def check_route(self) -> None:
        if self.host and _is_ip(self.host) and guard.is_lab_address(self.host):
            guard.require_lab_route(self.host)

    # -- how restic is started -------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        argv = [RESTIC, "--repo", self.url]
        if self.sftp:
            if not self.ssh_key or not self.known_hosts:
                raise ConfigError(f"backup.repository {self.url}: an sftp repository needs backup.ssh_key and "
                                  "backup.known_hosts")
            ssh = ["ssh", "-i", str(self.ssh_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", "ConnectTimeout=10", f"{self.sftp.group('user')}@{self.host}", "-s", "sftp"]
            argv += ["-o", "sftp.command=" + shlex.join(ssh)]
        if self.cache_dir:
            argv += ["--cache-dir", str(self.cache_dir)]
        return argv + list(args)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env["RESTIC_PASSWORD"] = self._password
        return env

    def popen(self, *args: str, stdin=None, stdout=subprocess.PIPE) -> subprocess.Popen:
        self.check_route()
        return subprocess.Popen(self.argv(*args), env=self.env(), stdin=stdin, stdout=stdout,
                                stderr=subprocess.PIPE)

    def run(self, *args: str, input: bytes | None = None, ok=(0,)) -> tuple[int, str, str]:
        self.check_route()
        try:
            done = subprocess.run(self.argv(*args), env=self.env(), input=input, capture_output=True,
                                  timeout=self.timeout)
        except FileNotFoundError:
            raise ConfigError("restic is not installed on the controller (apt-get install restic)") from None
        except subprocess.TimeoutExpired:
            raise ResticError(f"{self.url}: restic {args[0]} took more than {self.timeout} s") from None
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        if done.returncode not in ok:
            raise ResticError(f"{self.url}: restic {args[0]} exited {done.returncode}: {_tail(err or out)}")
        return done.returncode, out, err

    # -- the repository --------------------------------------------------------

    def exists(self) -> bool:
        self.check_route()
        done = subprocess.run(self.argv("cat", "config"), env=self.env(), capture_output=True, timeout=120)
        if done.returncode == 0:
            return True
        err = done.stderr.decode(errors="replace")
        if any(text in err for text in _MISSING):
            return False
        raise ResticError(f"{self.url}: cannot open the repository: {_tail(err)}")

    def init(self) -> None:
        self.run("init")

    def snapshots(self, host: str | None = None, tags: list[str] | None = None) -> list[dict]:
        args = ["snapshots", "--json"]
        if host:
            args += ["--host", host]
        for tag in tags or ():
            args += ["--tag", tag]
        _, out, _ = self.run(*args)
        return json.loads(out or "[]") or []

    def backup_command(self, filename: str, host: str, tags: dict[str, str], at: datetime | None = None) -> list[str]:
        args = ["backup", "--json", "--stdin", "--stdin-filename", filename, "--host", host]
        for key, value in sorted(tags.items()):
            args += ["--tag", f"{key}={value}"]
        if at is not None:
            args += ["--time", at.strftime("%Y-%m-%d %H:%M:%S")]
        return args

    def backup_stdin(self, data: bytes, filename: str, host: str, tags: dict[str, str],
                     at: datetime | None = None) -> dict:
        """A snapshot of `data` (small things: the state, a test's content); the summary."""
        _, out, _ = self.run(*self.backup_command(filename, host, tags, at), input=data)
        return summary(out, self.url)

    def backup_file(self, path: Path, filename: str, host: str, tags: dict[str, str]) -> dict:
        """A snapshot of a file of the controller, read by restic from its stdin."""
        self.check_route()
        with open(path, "rb") as data:
            done = subprocess.run(self.argv(*self.backup_command(filename, host, tags)), env=self.env(), stdin=data,
                                  capture_output=True, timeout=self.timeout)
        if done.returncode != 0:
            raise ResticError(f"{self.url}: restic backup exited {done.returncode}: "
                              f"{_tail(done.stderr.decode(errors='replace'))}")
        return summary(done.stdout.decode(errors="replace"), self.url)

    def forget(self, policy: Policy, prune: bool = True) -> list[dict]:
        """Apply retention per host (site) and path (kind); restic's groups with keep and remove."""
        args = ["forget", "--json", "--group-by", "host,paths", *policy.flags()]
        if prune:
            args.append("--prune")
        _, out, _ = self.run(*args)
        # --prune prints its report after the JSON on the same stream.
        first = out.lstrip().splitlines()[0] if out.strip() else "[]"
        try:
            return json.loads(first) or []
        except ValueError:
            return []

    def check(self, read_data: str) -> tuple[bool, str]:
        """restic check; reading back `read_data` of the packs (a subset like 10%, or all)."""
        args = ["check", "--read-data"] if read_data == "all" else ["check", f"--read-data-subset={read_data}"]
        rc, out, err = self.run(*args, ok=(0, 1))
        # What names the damage (a pack whose content no longer matches its id, an error), not the progress.
        found = [line.strip() for line in (out + err).splitlines() if re.search(r"error|pack id|fatal", line, re.I)]
        return rc == 0, ("\n".join(found) or _tail(out + err))[-2000:]


def summary(out: str, url: str) -> dict:
    """The summary line restic backup --json ends with: snapshot_id, data_added, total_bytes_processed."""
    for line in reversed(out.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("message_type") == "summary" and message.get("snapshot_id"):
            return message
    raise ResticError(f"{url}: restic backup printed no summary: {_tail(out)}")


def _tail(text: str, size: int = 400) -> str:
    return " ".join(text.strip().split())[-size:]


def _is_ip(host: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+", host))
