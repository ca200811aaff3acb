"""A run's secrets directory is named with its PID; the next run removes those of dead runs."""

import os
import subprocess
import sys

from provisioner import runner


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_secrets_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"{runner.SECRETS_PREFIX}{_dead_pid()}-abc123"
    live = tmp_path / f"{runner.SECRETS_PREFIX}{os.getpid()}-def456"
    unrelated = tmp_path / "provisioner-run-xyz"
    for directory in (dead, live, unrelated):
        directory.mkdir()
        (directory / "secrets.json").write_text('{"provisioner_secrets": {"db": "x"}}')
    removed = runner.sweep_stale_secrets(str(tmp_path))
    assert removed == [dead]
    assert not dead.exists() and live.exists() and unrelated.exists()


def test_ansible_playbook_runs_with_a_parent_death_signal():
    binary, args = runner.contained_command(["--check"], "/x/site.yml")
    assert binary.endswith("setpriv")
    assert args[:3] == ["--pdeathsig", "KILL", "--"]
    assert args[-2:] == ["--check", "/x/site.yml"]
    assert "ansible-playbook" in " ".join(args)
    if os.geteuid() == 0:
        assert "--pid" in args and "--kill-child" in args
