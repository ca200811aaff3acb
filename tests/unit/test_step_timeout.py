"""An Ansible step has a time limit: past it the run is stopped and the step fails saying so."""

import subprocess
import uuid

import pytest

from provisioner import runner
from provisioner.config import Config, default_offices
from provisioner.errors import HostError


def test_a_timeout_status_is_a_failure_that_says_timed_out():
    with pytest.raises(HostError, match="ansible run timed out on web1; it was stopped"):
        runner.check_result("timeout", 254, {"processed": {"web1": 1}}, {"web1"})


def test_the_step_timeout_is_configurable_with_a_sane_default():
    assert Config(offices=default_offices()).hosting.step_timeout == 1800
    assert Config(offices=default_offices(), hosting={"step_timeout": 60}).hosting.step_timeout == 60


def running(marker: str) -> list[str]:
    """Command lines of the processes on this machine that carry the marker."""
    found = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def test_a_playbook_running_past_the_timeout_is_stopped(tmp_path, monkeypatch):
    """A real ansible-playbook on this machine (connection local), stuck in a pause."""
    marker = f"stuck-{uuid.uuid4().hex}"  # in the playbook's name, so in its command line
    (tmp_path / f"{marker}.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        "  tasks:\n    - ansible.builtin.pause:\n        seconds: 120\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local\n")
    monkeypatch.setattr(runner, "PLAYBOOKS", tmp_path)
    with pytest.raises(HostError, match="timed out on localhost") as caught:
        runner.run_playbook(f"{marker}.yml", inventory, {"localhost"}, artifact_dir=tmp_path / "artifacts",
                            timeout=3)
    # What hosting relies on to reconcile from the live state instead of running the step again.
    assert caught.value.timed_out is True
    # The stopped run is really gone: no ansible-playbook (nor its pause) left behind.
    assert running(marker) == []
