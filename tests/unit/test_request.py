from datetime import date

import pytest

from provisioner import naming
from provisioner.config import REPO_ROOT
from provisioner.errors import ValidationError
from provisioner.request import load_request, validate

EXAMPLES = REPO_ROOT / "examples"
TODAY = date(2024, 9, 30)
GOOD = (EXAMPLES / "tarakan-simkes.yaml").read_text()


def problems(text, config, today=TODAY):
    with pytest.raises(ValidationError) as err:
        validate(text.encode(), config, today=today)
    return {(p.field, p.line): p.rule for p in err.value.problems}


def edit(old, new):
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("name", ["tarakan-simkes.yaml", "buleleng-sipandu.yaml"])
def test_examples_are_valid(config, name):
    req = load_request(EXAMPLES / name, config, today=TODAY)
    assert req.sha256 == __import__("hashlib").sha256((EXAMPLES / name).read_bytes()).hexdigest()


def test_sample_fields_and_office(config):
    req = validate(GOOD.encode(), config, today=TODAY)
    assert (req.id, req.office, req.site.fqdn) == ("HST-2024-0007", "tarakan", "simkes.tarakankota.go.id")
    assert req.site.php_version == "8.2" and req.site.quota_mb == 2048 and req.site.tls is True
    buleleng = load_request(EXAMPLES / "buleleng-sipandu.yaml", config, today=TODAY)
    assert buleleng.office == "buleleng" and buleleng.site.dedicated_ip is True


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.yaml")), ids=lambda p: p.name)
def test_invalid_examples_give_their_recorded_errors(config, path):
    expected = path.with_suffix(".errors.txt").read_text().splitlines()
    with pytest.raises(ValidationError) as err:
        load_request(path, config)
    assert [str(p) for p in err.value.problems] == expected


def test_every_problem_at_once_with_lines(config):
    text = edit("id: HST-2024-0007", "id: hst-2024-0007")
    text = text.replace('phone: "081234567890"', 'phone: "0812"').replace("quota_mb: 2048", "quota_mb: -5")
    found = problems(text, config)
    assert set(found) == {("id", 1), ("contact.phone", line_of(text, "phone:")),
                          ("site.quota_mb", line_of(text, "quota_mb"))}


def test_missing_fields_are_reported_at_their_section(config):
    text = "\n".join(l for l in GOOD.splitlines() if "email:" not in l and "purpose:" not in l)
    found = problems(text, config)
    assert found[("contact.email", line_of(text, "contact:"))] == "required"
    assert found[("purpose", 1)] == "required"


@pytest.mark.parametrize("old,new,field,rule_part", [
    ('id: HST-2024-0007', 'id: "HST-2024-0007\\n"', "id", "must look like"),
    ('id: HST-2024-0007', 'id: HST-２０２４-0007', "id", "must look like"),
    ('nip: "198001012005012003"', 'nip: "19800101200501200٣"', "contact.nip", "18 digits"),
    ('nip: "198001012005012003"', 'nip: "19800101200501200"', "contact.nip", "18 digits"),
    ('phone: "081234567890"', 'phone: "+6281234567890\\n"', "contact.phone", "mobile"),
    ('phone: "081234567890"', 'phone: "０81234567890"', "contact.phone", "mobile"),
    ("subdomain: simkes", 'subdomain: "simkes\\n"', "site.subdomain", "one DNS label"),
    ("subdomain: simkes", "subdomain: sіmkes", "site.subdomain", "ASCII only"),  # Cyrillic і
    ("subdomain: simkes", "subdomain: simkes٣", "site.subdomain", "ASCII only"),
    ("subdomain: simkes", "subdomain: 12345", "site.subdomain", "text"),
    ("subdomain: simkes", 'subdomain: "12345"', "site.subdomain", "all digits"),
    ("subdomain: simkes", "subdomain: mail", "site.subdomain", "reserved"),
    ("subdomain: simkes", "subdomain: Simkes", "site.subdomain", "one DNS label"),
    ("subdomain: simkes", "subdomain: -simkes", "site.subdomain", "one DNS label"),
    ("subdomain: simkes", "subdomain: sim.kes", "site.subdomain", "one DNS label"),
    ("subdomain: simkes", "subdomain: " + "a" * 64, "site.subdomain", "one DNS label"),
    ("zone: tarakankota.go.id", "zone: tarakan.go.id", "site.zone", "zone the office manages"),
    ("date: 2024-08-12", "date: 2024-10-01", "letter.date", "future"),
    ("date: 2024-08-12", 'date: "2024-02-30"', "letter.date", "real calendar date"),
    ("stack: php", "stack: node", "site.stack", "one of"),
    ('php_version: "8.2"', 'php_version: "5.6"', "site.php_version", "supported"),
    ("database: true", "database: 1", "site.database", "true or false"),
    ("quota_mb: 2048", "quota_mb: true", "site.quota_mb", "whole number"),
    ("bandwidth_kbps: 0", "bandwidth_kbps: -1", "site.bandwidth_kbps", "between 0"),
    ('email: "datin@dinkes.tarakankota.go.id"', 'email: "datin@dinkes"', "contact.email", "e-mail"),
    ('name: "dr. Siti Aminah"', 'name: "dr. Siti\\u0007Aminah"', "contact.name", "printable"),
    ('subject: "Permohonan', 'subject: "Baris\\nkedua', "letter.subject", "line breaks"),
    ("code: DINKES", "code: DİNKES", "agency.code", "capital letters"),
])
def test_rules(config, old, new, field, rule_part):
    text = edit(old, new)
    found = problems(text, config)
    rules = [rule for (f, _), rule in found.items() if f == field]
    assert rules and any(rule_part in r for r in rules), found
    assert all(f == field for f, _ in found), found  # only the broken field is reported


def test_static_site_needs_no_php_version(config):
    text = edit('stack: php\n  php_version: "8.2"', "stack: static")
    assert validate(text.encode(), config, today=TODAY).site.php_version is None


def test_not_yaml_mapping_and_syntax_errors(config):
    assert ("(document)", 1) in problems("- a\n- b\n", config)
    found = problems("id: [unclosed\n", config)
    assert any("not valid YAML" in rule for rule in found.values())
    with pytest.raises(ValidationError, match="not UTF-8"):
        validate(b"id: \xff\xfe", config)


def test_unknown_extra_fields_are_fine(config):
    assert validate((GOOD + "ticket_note: extra\n").encode(), config, today=TODAY).id == "HST-2024-0007"


def test_site_slug_is_safe_and_distinct():
    a = naming.site_slug("simkes", "tarakankota.go.id")
    b = naming.site_slug("simkes", "bulelengkab.go.id")
    assert a != b and a.startswith("simkes_") and len(a) <= naming.SLUG_MAX
    long = naming.site_slug("9" + "a-" * 30 + "b", "tarakankota.go.id")
    assert long[0] == "s" and len(long) <= naming.SLUG_MAX and "-" not in long
    with pytest.raises(ValueError):
        naming.site_slug("bad label", "tarakankota.go.id")
