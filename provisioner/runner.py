"""The one module that drives Ansible, through ansible-runner.

A run counts as a success only when ansible-runner says so in every way it
can: status "successful", rc 0, every expected host processed, and no host
unreachable, failed or with ignored errors. ("No hosts matched" exits 0; here
it is a failure.)
"""

import os
import sys
import tempfile
from dataclasses import dataclass, field
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


def check_result(status: str, rc: int, stats: dict | None, expected_hosts: set[str]) -> RunResult:
    """Turn ansible-runner's outcome into a RunResult, or raise HostError."""
    stats = stats or {}
    problems = []
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
        raise HostError("ansible run failed: " + "; ".join(problems))
    return RunResult(status, rc, stats, changed=dict(stats.get("changed") or {}))


def _env() -> dict[str, str]:
    # ansible-playbook lives beside this interpreter (the project's venv).
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "True",
    }


def run_playbook(
    playbook: str,
    inventory: Path,
    expected_hosts: set[str],
    extravars: dict | None = None,
    limit: str | None = None,
    check: bool = False,
    artifact_dir: Path | None = None,
) -> RunResult:
    """Run a playbook from `playbooks/` against an inventory and check it fully."""
    path = PLAYBOOKS / playbook
    if not path.is_file():
        raise HostError(f"no such playbook: {path}")
    with tempfile.TemporaryDirectory(prefix="provisioner-run-") as private:
        result = ansible_runner.run(
            private_data_dir=private,
            artifact_dir=str(artifact_dir) if artifact_dir else None,
            playbook=str(path),
            inventory=str(Path(inventory).resolve()),
            extravars=extravars or {},
            limit=limit,
            cmdline="--check --diff" if check else None,
            envvars=_env(),
            # Extravars stay in memory: nothing with a secret is written to env/.
            suppress_env_files=True,
            quiet=True,
        )
        return check_result(result.status, result.rc, result.stats, expected_hosts)
