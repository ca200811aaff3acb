"""Running commands on the controller for the lab builder (root, local only)."""

import os
import subprocess

from provisioner.errors import LabError, PermissionDenied


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionDenied(f"{what} needs root (run it with sudo)")


def run(*argv: str, check: bool = True, input: str | None = None, env=None) -> subprocess.CompletedProcess:
    """Run one command with arguments kept apart (never through a shell)."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, input=input, env=env
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {detail[-1] if detail else 'no output'}")
    return proc


def ok(*argv: str) -> bool:
    return subprocess.run(list(argv), capture_output=True).returncode == 0
