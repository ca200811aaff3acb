import pytest

from provisioner.config import REPO_ROOT
from provisioner.errors import ConfigError, NotFound, ValidationError
from provisioner.sop.hooks import ACTIONS
from provisioner.sop.model import load_all, load_sop, office_sop, parse_waktu

SOP_DIR = REPO_ROOT / "sop"


def test_the_four_sops_load():
    sops = {s.name: s for s in load_all(SOP_DIR, ACTIONS.names())}
    # The four seeded SOPs, and Buleleng's hosting (Tarakan's flow, Buleleng's office).
    assert set(sops) == {"hosting", "website", "konsultasi-aplikasi", "aplikasi-api", "hosting-buleleng"}
    assert [len(sops[n].steps) for n in ("hosting", "website", "konsultasi-aplikasi", "aplikasi-api")] \
        == [10, 11, 11, 16]


def test_each_office_runs_only_its_own_sops(config):
    for office in config.offices.values():
        for service, name in office.sops.items():
            sop = office_sop(config, office.key, service, ACTIONS.names())
            assert sop.name == name and sop.office == office.key
    assert office_sop(config, "tarakan", "hosting").citation() == "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022"
    buleleng = office_sop(config, "buleleng", "hosting")
    # Same flow as Tarakan's, but never Tarakan's document number.
    assert [s.key for s in buleleng.steps] == [s.key for s in office_sop(config, "tarakan", "hosting").steps]
    assert buleleng.document.number is None and buleleng.citation() == "SOP Layanan Hosting"
    with pytest.raises(ConfigError, match="runs no SOP for service 'website'"):
        office_sop(config, "buleleng", "website")


def test_an_office_naming_another_offices_sop_is_a_config_error(config):
    offices = dict(config.offices)
    offices["buleleng"] = offices["buleleng"].model_copy(update={"sops": {"hosting": "hosting"}})
    borrowed = config.model_copy(update={"offices": offices})
    with pytest.raises(ConfigError, match="SOP hosting is office tarakan's"):
        office_sop(borrowed, "buleleng", "hosting")


def test_hosting_binds_its_actions_and_branches():
    sop = load_sop(SOP_DIR, "hosting", ACTIONS.names())
    assert sop.step("konfigurasi_server").action == "provision_site"
    assert sop.step("6").activity == "Pembuatan dan konfigurasi server"
    assert sop.step(7).action == "render_letter"
    decision = sop.approval_step
    assert decision.number == 5 and decision.actor == "kadis"
    assert decision.branches["ya"].next == "konfigurasi_server"
    assert decision.branches["tidak"].action == "render_reply_letter"


def test_buleleng_keeps_two_steps_numbered_14():
    sop = load_sop(SOP_DIR, "aplikasi-api", ACTIONS.names())
    assert [s.number for s in sop.steps if s.number == 14] == [14, 14]
    with pytest.raises(NotFound, match="not unique"):
        sop.step(14)
    assert sop.step("serah_terima").actor == "kadis"
    assert sop.step("pembuatan").standard.fixed is False
    assert sop.step("lapor_kadis").next == "serah_terima"


def test_website_existence_branches():
    sop = load_sop(SOP_DIR, "website", ACTIONS.names())
    assert set(sop.step("cek_website").branches) == {"ada", "belum_ada"}


@pytest.mark.parametrize("text,amount,unit", [
    ("2 Menit", 2, "minutes"), ("3 hari", 3, "days"), ("24 jam", 24, "hours"), ("1 minggu", 1, "weeks")])
def test_waktu(text, amount, unit):
    standard = parse_waktu(text)
    assert (standard.amount, standard.unit, standard.text) == (amount, unit, text)


@pytest.mark.parametrize("bad", ["2 Meint", "dua hari", "2 Menit\n", "٢ Menit", "0 Menit"])
def test_waktu_rejects(bad):
    with pytest.raises(ValueError):
        parse_waktu(bad)


@pytest.mark.parametrize("old,new,message", [
    ("actor: bagian_umum", "actor: satpam", "not a role of this SOP"),
    ("next: konfigurasi_server", "next: nowhere", "no step with key 'nowhere'"),
    ("waktu: 2 Hari", "waktu: 2 Harian", "waktu"),
    ("approval: true", "approval: false", "exactly one step must have approval"),
    ("action: provision_site", "action: launch_rockets", "unknown action 'launch_rockets'"),
    ("name: hosting", "name: hostingx", "must be 'hosting'"),
    ("    output: [Server Hosting]", "    output: [Server Hosting]\n    colour: red", "colour"),
    ("  - key: agenda", "  - key: permohonan", "duplicate step key"),
])
def test_schema_rejects_malformed_sop(sop_copy, old, new, message):
    path = sop_copy / "hosting.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValidationError) as err:
        load_sop(sop_copy, "hosting", ACTIONS.names())
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert all(p.line for p in err.value.problems)


def test_unreachable_step_is_rejected(sop_copy):
    path = sop_copy / "hosting.yaml"
    path.write_text(path.read_text().replace("    waktu: 25 Menit\n", "    waktu: 25 Menit\n    next: selesai\n"))
    with pytest.raises(ValidationError, match="cannot be reached"):
        load_sop(sop_copy, "hosting", ACTIONS.names())


def test_unknown_sop():
    with pytest.raises(NotFound, match="no SOP named 'colocation'"):
        load_sop(SOP_DIR, "colocation")


def test_the_document_and_data_bindings():
    konsultasi = load_sop(SOP_DIR, "konsultasi-aplikasi", ACTIONS.names())
    assert (konsultasi.step("analisa").data, konsultasi.step("analisa").data_required) == ("analysis", True)
    assert [konsultasi.step(k).after for k in ("analisa", "penyusunan_kak", "lapor_kadis")] == \
        ["render_analysis", "render_kak", "render_report"]
    assert konsultasi.step("penyusunan_kak").data == "kak" and not konsultasi.step("penyusunan_kak").data_required
    api = load_sop(SOP_DIR, "aplikasi-api", ACTIONS.names())
    assert {s.key: (s.data, s.data_required, s.after) for s in api.steps if s.data or s.after} == {
        "analisa": ("analysis", True, "render_analysis"), "delegasi": ("delegation", True, "render_delegation"),
        "lapor_kasi": (None, False, "render_report"), "lapor_kabid": (None, False, "render_report"),
        "lapor_kadis": (None, False, "render_report"), "serah_terima": ("handover", False, "render_handover")}
    website = load_sop(SOP_DIR, "website", ACTIONS.names())
    assert website.step("cek_website").answered_by == "site_exists"
    assert website.step("instalasi").action == "install_website"
    assert website.step("laporan").after == "render_website_report"
    assert "render_website_report" in website.actions()


@pytest.mark.parametrize("old,new,message", [
    ("    after: render_kak", "    after: render_poem", "unknown action 'render_poem'"),
    ("    data: kak  #", "    data: minutes  #", "unknown data kind 'minutes'"),
    ("    data: kak  # optional: duration, budget, scope, outputs beyond what the analysis gives\n",
     "    data_required: true\n", "data_required: only with data: KIND"),
    ("    approval: true\n", "    approval: true\n    after: render_kak\n", "only a step a person records"),
    ("    approval: true\n", "    approval: true\n    data: kak\n", "only a step a person records takes a data file"),
    ("    output: [Data untuk tindak lanjut]\n    approval: true\n",
     "    output: [Data untuk tindak lanjut]\n    approval: true\n    answered_by: site_exists\n",
     "site_exists answers a decision step (not the approval) whose branches are ada and belum_ada"),
    ("    after: render_report", "    after: render_report\n    answered_by: weather", "unknown answer 'weather'"),
])
def test_schema_rejects_bad_step_extras(sop_copy, old, new, message):
    path = sop_copy / "konsultasi-aplikasi.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValidationError) as err:
        load_sop(sop_copy, "konsultasi-aplikasi", ACTIONS.names())
    assert message in str(err.value)
    assert all(p.line for p in err.value.problems)


def test_an_after_action_beside_branch_actions_is_refused(sop_copy):
    path = sop_copy / "website.yaml"
    path.write_text(path.read_text().replace("        label: Website belum ada (pembuatan)\n",
                                 "        label: Website belum ada (pembuatan)\n        action: render_letter\n")
                    .replace("    answered_by: site_exists\n", "    answered_by: site_exists\n    after: render_kak\n"))
    with pytest.raises(ValidationError, match="whose branches run actions cannot also run one after it"):
        load_sop(sop_copy, "website", ACTIONS.names())
