"""The one module that drives Ansible, through ansible-runner.

A run counts as a success only when ansible-runner says so in every way it
can: status "successful", rc 0, every expected host processed, and no host
unreachable, failed or with ignored errors. ("No hosts matched" exits 0; here
it is a failure.)
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import ansible_runner

from provisioner.errors import HostError

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


@dataclass
class RunResult:
    status: str
    rc: int
    stats: dict
    changed: dict[str, int] = field(default_factory=dict)


def failure_details(events) -> list[str]:
    """Host, task and message of each failed or unreachable task (no_log tasks stay censored)."""
    details = []
    for event in events or ():
        if event.get("event") not in ("runner_on_failed", "runner_on_unreachable"):
            continue
        data = event.get("event_data", {})
        if data.get("ignore_errors"):
            continue
        res = data.get("res") or {}
        message = res.get("msg") or res.get("stderr") or res.get("stdout") or ""
        details.append(f"{data.get('host')}: {data.get('task')}: {str(message).strip()[:300]}")
    return details


def check_result(status: str, rc: int, stats: dict | None, expected_hosts: set[str],
                 details: list[str] | None = None) -> RunResult:
    """Turn ansible-runner's outcome into a RunResult, or raise HostError."""
    stats = stats or {}
    problems = []
    if status == "timeout":
        # What the play did before it was stopped is unknown: the caller reads the live state.
        err = HostError("ansible run timed out" + (f" on {', '.join(sorted(expected_hosts))}" if expected_hosts
                                                   else "") + "; it was stopped")
        err.timed_out = True  # the caller must not simply run it again
        raise err
    if status != "successful":
        problems.append(f"status {status}")
    if rc != 0:
        problems.append(f"rc {rc}")
    processed = set(stats.get("processed", {}))
    missing = expected_hosts - processed
    if missing:
        problems.append(f"hosts not processed: {', '.join(sorted(missing))}")
    for kind, label in (("dark", "unreachable"), ("failures", "failed"), ("ignored", "ignored errors")):
        hosts = sorted(h for h, n in (stats.get(kind) or {}).items() if n)
        if hosts:
            problems.append(f"{label}: {', '.join(hosts)}")
    if problems:
        err = HostError("ansible run failed: " + "; ".join(problems + list(details or [])))
        # A host that cannot be reached fails every site on it alike: the caller does not retry per site.
        err.unreachable = any(n for n in (stats.get("dark") or {}).values())
        raise err
    return RunResult(status, rc, stats, changed=dict(stats.get("changed") or {}))


def _env() -> dict[str, str]:
    # ansible-playbook lives beside this interpreter (the project's venv).
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # Each task's module goes over the ssh connection's stdin (no temporary file, no
        # extra round trip) and every task of a run reuses one master connection per
        # host. The masters die with the run's PID namespace; within a run is enough.
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=60s",
        # Facts only where a play asks for them (none of ours need them).
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_NOCOLOR": "True",
    }


def _secret_dir() -> str | None:
    # Memory-backed when the machine has it, so secrets never touch a disk.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


SECRETS_PREFIX = "provisioner-secrets-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_secrets(directory: str | None = None) -> list[Path]:
    """Remove the secrets directories of runs whose process is gone (killed mid-run).

    Each run names its directory provisioner-secrets-<pid>-*; a run killed with
    SIGKILL cannot clean up after itself, so the next run does it.
    """
    base = Path(directory or _secret_dir() or tempfile.gettempdir())
    removed = []
    for path in base.glob(SECRETS_PREFIX + "*"):
        pid = path.name[len(SECRETS_PREFIX):].split("-", 1)[0]
        try:
            mine = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.geteuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@cache
def _can_unshare_pid() -> bool:
    # A new PID namespace needs root (CAP_SYS_ADMIN); probe once instead of guessing.
    if not (shutil.which("setpriv") and shutil.which("unshare")):
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def contained_command(options: list[str], playbook: str) -> tuple[str | None, list[str]]:
    """(binary, arguments) that run ansible-playbook so that it dies with the toolkit.

    setpriv gives the wrapper a parent-death signal: when the toolkit's process
    dies (even by SIGKILL) the kernel kills it. unshare then starts
    ansible-playbook as PID 1 of a fresh PID namespace, and when that namespace's
    init dies the kernel kills every process in it: ssh, ControlPersist masters,
    anything a module left behind. Without the privilege for a namespace,
    ansible-playbook itself still gets the parent-death signal.
    """
    playbook_bin = str(Path(sys.executable).parent / "ansible-playbook")
    if not Path(playbook_bin).exists():
        playbook_bin = shutil.which("ansible-playbook") or "ansible-playbook"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None, options  # ansible-runner adds the playbook itself
    inner = [playbook_bin]
    if _can_unshare_pid():
        inner = [shutil.which("unshare"), "--pid", "--fork", "--kill-child", "--", playbook_bin]
    # With a binary of its own, ansible-runner leaves the playbook to the arguments.
    return setpriv, ["--pdeathsig", "KILL", "--", *inner, *options, playbook]


def run_playbook(
    playbook: str,
    inventory: Path,
    expected_hosts: set[str],
    extravars: dict | None = None,
    secrets: dict | None = None,
    limit: str | None = None,
    check: bool = False,
    artifact_dir: Path | None = None,
    timeout: int | None = None,
) -> RunResult:
    """Run a playbook from `playbooks/` against an inventory and check it fully.

    `extravars` may be logged: they are written to a file in the run's private
    directory and passed as `-e @file` (never on the command line: one argument
    may not exceed 128 KiB, which a batch of a hundred sites' vhosts passes).
    `secrets` never are: they reach the play as the variable
    `provisioner_secrets`, read from a private file (mode 0600, removed after
    the run) that only its path names, and tasks using them are `no_log`.
    """
    path = PLAYBOOKS / playbook
    if not path.is_file():
        raise HostError(f"no such playbook: {path}")
    options = ["--check", "--diff"] if check else []
    sweep_stale_secrets()
    with tempfile.TemporaryDirectory(prefix="provisioner-run-") as private, \
            tempfile.TemporaryDirectory(prefix=f"{SECRETS_PREFIX}{os.getpid()}-", dir=_secret_dir()) as vault:
        if secrets:
            secrets_file = Path(vault) / "secrets.json"
            fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"provisioner_secrets": secrets}, out)
            options += ["-e", f"@{secrets_file}"]
        if extravars:
            vars_file = Path(private) / "extravars.json"
            vars_file.write_text(json.dumps(extravars))
            options += ["-e", f"@{vars_file}"]
        # ansible-runner appends inventory and limit to these arguments.
        binary, arguments = contained_command(options, str(path))
        result = ansible_runner.run(
            private_data_dir=private,
            artifact_dir=str(artifact_dir) if artifact_dir else None,
            playbook=str(path),
            inventory=str(Path(inventory).resolve()),
            limit=limit,
            binary=binary,
            cmdline=shlex.join(arguments) or None,
            envvars=_env(),
            suppress_env_files=True,
            quiet=True,
            # Past it ansible-runner stops the run and reports status "timeout".
            timeout=timeout,
        )
        details = failure_details(result.events) if result.status != "successful" or result.rc else []
        return check_result(result.status, result.rc, result.stats, expected_hosts, details)
