"""Step data files: each kind's schema, every problem at once with its line, the size limit."""

import pytest

from provisioner.config import REPO_ROOT
from provisioner.errors import ValidationError
from provisioner.request import MAX_BYTES
from provisioner.sop.stepdata import KINDS, read_step_data, validate_step_data

DATA = REPO_ROOT / "examples" / "data"


def problems(text, kind):
    with pytest.raises(ValidationError) as err:
        validate_step_data(text.encode(), kind, source="d.yaml")
    return {(p.field, p.line): p.rule for p in err.value.problems}


@pytest.mark.parametrize("name,kind", [("analisa-simpeg.yaml", "analysis"), ("kak-simpeg.yaml", "kak"),
                                       ("analisa-sipandu.yaml", "analysis"), ("delegasi-sipandu.yaml", "delegation"),
                                       ("serah-terima-sipandu.yaml", "handover")])
def test_the_example_data_files_are_valid(name, kind):
    data = read_step_data(DATA / name, kind)
    assert set(data) == set(KINDS[kind][0])


def test_analysis_fields():
    data = read_step_data(DATA / "analisa-sipandu.yaml", "analysis")
    assert data["needs"][0] == "Halaman pelacakan status berkas bagi pemohon"
    assert data["users"] is None and data["risks"] == ["Beban server bertambah pada jam layanan"]


def test_analysis_problems_all_at_once():
    text = "summary: ''\nneeds: []\nfeatures: [ok, 5]\nrecommendation: 12\nextra: x\n"
    assert problems(text, "analysis") == {
        ("summary", 1): "must not be empty",
        ("needs", 2): "must have at least 1 item(s)",
        ("features[1]", 3): "must be printable text of at most 300 characters on one line",
        ("recommendation", 4): "must be text (quote it)",
        ("extra", 5): "unknown field; allowed: summary, needs, users, data, features, risks, recommendation",
    }


def test_kak_rules():
    data = validate_step_data(b'duration: "3 (tiga) bulan"\n', "kak")
    assert data == {"duration": "3 (tiga) bulan", "budget_rupiah": None, "scope": [], "outputs": [],
                    "location": None}
    rule = "must be a whole number of rupiah from 0 to 1.000.000.000.000.000"
    found = problems("duration: x\nbudget_rupiah: -1\n", "kak")
    assert found == {("budget_rupiah", 2): rule}
    # A typing slip of a few extra zeros is refused, not spelt out in the KAK.
    assert problems(f"duration: x\nbudget_rupiah: {10**15 + 1}\n", "kak") == {("budget_rupiah", 2): rule}
    top = validate_step_data(f"duration: x\nbudget_rupiah: {10**15}\n".encode(), "kak")
    assert top["budget_rupiah"] == 10**15
    assert problems("budget_rupiah: true\n", "kak")[("budget_rupiah", 1)] == "must be a whole number"
    assert problems("scope: [a]\n", "kak")[("duration", 1)] == "required"


def test_delegation_rules():
    data = read_step_data(DATA / "delegasi-sipandu.yaml", "delegation")
    assert data["due"] == "2024-11-29" and data["programmers"][1] == {"name": "Ni Luh Putu Ayu Lestari", "nip": None}
    text = ("programmers:\n  - name: A\n    nip: '123'\n  - nama: B\ntask: t\ndue: '2024-13-01'\n")
    found = problems(text, "delegation")
    assert found[("programmers[0].nip", 3)] == "must be exactly 18 digits 0-9"
    assert found[("programmers[1].nama", 4)].startswith("unknown field")
    assert found[("programmers[1].name", 4)] == "required"
    assert "date" in found[("due", 6)]
    assert problems("programmers: []\ntask: t\ndue: 2024-01-01\n", "delegation") == {
        ("programmers", 1): "must have at least 1 item(s)"}


def test_handover_rules():
    text = "version: '2.0'\ndocuments: [Kode sumber]\nreceived_by:\n  name: A\n"
    found = problems(text, "handover")
    assert found == {("received_by.nip", 3): "required", ("received_by.position", 3): "required"}


def test_not_a_mapping_and_bad_yaml():
    assert problems("- a\n", "kak") == {("(document)", 1): "must be a mapping of fields (a kak file)"}
    assert any("not valid YAML" in rule for rule in problems("a: [\n", "kak").values())


def test_size_limit_and_missing_file(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"duration: x\n" + b"#" * MAX_BYTES)
    with pytest.raises(ValidationError, match="larger than"):
        read_step_data(big, "kak")
    with pytest.raises(ValidationError, match="cannot read"):
        read_step_data(tmp_path / "missing.yaml", "kak")


def test_unknown_kind_is_a_bug():
    with pytest.raises(ValueError):
        validate_step_data(b"a: 1\n", "minutes")
