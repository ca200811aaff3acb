"""A run's secrets directory is named with its PID; the next run removes those of dead runs."""

import json
import os
import subprocess
import sys

from types import SimpleNamespace

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


def test_extra_vars_go_in_a_file_not_on_the_command_line(monkeypatch, tmp_path):
    """A hundred sites' vhosts make one argument over Linux's 128 KiB limit for a single
    argument (the run would fail to start): the variables travel in a private file."""
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        path = next(a for a in kwargs["cmdline"].split() if a.endswith("extravars.json")).lstrip("@")
        seen["file"] = json.loads(open(path).read())
        return SimpleNamespace(status="successful", rc=0, stats={"processed": {"web1": 1}}, events=[])

    monkeypatch.setattr(runner.ansible_runner, "run", fake_run)
    sites = [{"fqdn": f"s{i}.example.go.id", "vhost_content": "x" * 4000} for i in range(100)]
    runner.run_playbook("ping.yml", tmp_path, {"web1"}, extravars={"web_site__sites": sites}, artifact_dir=tmp_path)
    assert seen["file"] == {"web_site__sites": sites}
    assert "extravars" not in seen and len(seen["cmdline"]) < 4096
