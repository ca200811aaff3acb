"""The commands through click's runner, against a temporary SQLite state file."""

import json

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.errors import ActionError
from provisioner.sop import hooks

from conftest import EXAMPLES


@pytest.fixture
def run(tmp_path, monkeypatch):
    # Unit tests never reach hosts: the hosting action fails as it would with the lab unreachable.
    def unreachable(ctx):
        raise ActionError("hosting is unreachable from unit tests")

    monkeypatch.setitem(hooks.ACTIONS._actions, "provision_site", unreachable)
    monkeypatch.setenv("PROVISIONER_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("PROVISIONER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


SIMKES = EXAMPLES / "tarakan-simkes.yaml"


def test_sop_list_and_show(run):
    result = run("sop", "list", "--json")
    assert result.exit_code == 0
    assert {s["name"]: s["steps"] for s in json.loads(result.output)}["aplikasi-api"] == 16
    shown = json.loads(run("sop", "show", "hosting", "--json").output)
    assert shown["steps"][5]["action"] == "provision_site"
    assert shown["steps"][5]["waktu"] == {"text": "2 Hari", "amount": 2, "unit": "days"}
    assert "konfigurasi_server" in run("sop", "show", "hosting").output
    picture = run("sop", "show", "hosting", "--mermaid").output
    assert picture.startswith("flowchart TD") and 'keputusan -->|"Ya"| konfigurasi_server' in picture


def test_submit_steps_decide_and_show(run):
    assert run("request", "submit", SIMKES, "--at", "2024-08-13T08:00").exit_code == 0
    assert run("step", "HST-2024-0007", "agenda", "--by", "bagian_umum", "--at", "2024-08-13T08:02",
               "--note", "Agenda 112").exit_code == 0
    assert run("step", "HST-2024-0007", "3", "--by", "kadis", "--at", "2024-08-13T08:03").exit_code == 0
    assert run("step", "HST-2024-0007", "4", "--by", "bidang_aplikasi",
               "--at", "2024-08-13T08:10").exit_code == 0
    # When the action fails, the decision is kept, the request needs attention,
    # and the exit code says the action failed.
    result = run("decide", "HST-2024-0007", "--approve", "--by", "kadis", "--at", "2024-08-13T08:30")
    assert result.exit_code == 6
    assert "unreachable from unit tests" in result.output and "Traceback" not in result.output
    shown = json.loads(run("request", "show", "HST-2024-0007", "--json").output)
    assert shown["state"] == "attention" and shown["decision"] == "approve"
    steps = {s["key"]: s for s in shown["steps"]}
    assert steps["agenda"]["note"] == "Agenda 112" and steps["agenda"]["by"] == "bagian_umum"
    assert steps["agenda"]["ended_at"] == "2024-08-13T08:02:00+08:00"
    assert steps["pengkajian"]["late"] == "2m working time"
    assert any(e["kind"] == "action_failed" for e in shown["events"])
    listed = json.loads(run("request", "list", "--json").output)
    assert [(r["id"], r["state"]) for r in listed] == [("HST-2024-0007", "attention")]
    overdue = json.loads(run("sla", "--json", "--at", "2024-08-16T08:00").output)
    assert [(o["request"], o["key"]) for o in overdue] == [("HST-2024-0007", "konfigurasi_server")]
    assert "HST-2024-0007" in run("request", "show", "HST-2024-0007").output
    assert run("decide", "HST-2024-0007", "--approve", "--by", "kadis").output.strip().endswith("nothing done")


@pytest.mark.parametrize("args,message", [
    (("request", "show", "HST-2024-0404"), "no request 'HST-2024-0404'"),
    (("step", "HST-2024-0007", "disposisi", "--by", "kadis"), "next step is 2 (agenda)"),
    (("step", "HST-2024-0007", "agenda", "--by", "kadis"), "done by bagian_umum"),
    (("step", "HST-2024-0007", "agenda", "--by", "bagian_umum", "--at", "yesterday"), "not an ISO 8601"),
    (("decide", "HST-2024-0007", "--reject", "--by", "kadis"), "next step is 2"),
    (("sop", "show", "colocation"), "no SOP named 'colocation'"),
])
def test_bad_input_is_one_line_and_nonzero(run, args, message):
    run("request", "submit", SIMKES, "--at", "2024-08-13T08:00")
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_request_lists_problems_and_registers_nothing(run):
    bad = EXAMPLES / "invalid" / "tarakan-bad-fields.yaml"
    result = run("request", "validate", bad)
    expected = (bad.with_suffix(".errors.txt")).read_text().splitlines()
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == len(expected)
    assert f"{bad}:2: id: must look like" in result.output
    result = run("request", "submit", bad)
    assert result.exit_code == 2 and "problem(s)" in result.output and "Traceback" not in result.output
    assert json.loads(run("request", "list", "--json").output) == []
    ok = json.loads(run("request", "validate", SIMKES, "--json").output)
    assert ok["ok"] and ok["request"]["site"]["fqdn"] == "simkes.tarakankota.go.id"


def test_state_url_from_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    config = tmp_path / "provisioner.yaml"
    config.write_text("state_url: sqlite:///" + str(tmp_path / "from-config.db") + "\n")
    result = CliRunner().invoke(main, ["request", "list", "--json", "--config", str(config)])
    assert result.exit_code == 0 and (tmp_path / "from-config.db").exists()
    config.write_text("offices: 3\n")
    result = CliRunner().invoke(main, ["request", "list", "--config", str(config)])
    assert result.exit_code == 2 and "offices" in result.output


def test_table_cells_are_printed_as_written(capsys):
    from provisioner.cli._common import table

    table("Sites", ["fqdn", "reason"], [("arsip.tarakankota.go.id", "Ditangguhkan [/tmp penuh] [bold]segera[/bold]"),
                                        ("simkes.tarakankota.go.id", None)])
    out = capsys.readouterr().out
    assert "Ditangguhkan [/tmp penuh] [bold]segera[/bold]" in out
    assert "simkes.tarakankota.go.id" in out and "None" not in out
