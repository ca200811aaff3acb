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


def test_unknown_fields_are_refused_but_stored_requests_still_load(config):
    """A misspelt optional field (`tls_optinal`) must not pass unseen; requests accepted before still read."""
    text = GOOD.replace("  tls: true\n", "  tls: true\n  tls_optinal: true\n") + "ticket_note: extra\n"
    assert text != GOOD + "ticket_note: extra\n"
    with pytest.raises(ValidationError) as err:
        validate(text.encode(), config, today=TODAY)
    found = {p.field: p.rule for p in err.value.problems}
    assert set(found) == {"site.tls_optinal", "ticket_note"}
    assert all(rule.startswith("unknown field; allowed: ") for rule in found.values())
    assert "tls_optional" in found["site.tls_optinal"] and "purpose" in found["ticket_note"]
    assert validate(text.encode(), config, today=TODAY, stored=True).id == "HST-2024-0007"


def test_site_slug_is_safe_and_distinct():
    a = naming.site_slug("simkes", "tarakankota.go.id")
    b = naming.site_slug("simkes", "bulelengkab.go.id")
    assert a != b and a.startswith("simkes_") and len(a) <= naming.SLUG_MAX
    long = naming.site_slug("9" + "a-" * 30 + "b", "tarakankota.go.id")
    assert long[0] == "s" and len(long) <= naming.SLUG_MAX and "-" not in long
    with pytest.raises(ValueError):
        naming.site_slug("bad label", "tarakankota.go.id")


# -- hostile input ----------------------------------------------------------------

PURPOSE = 'purpose: "Sistem informasi layanan kesehatan masyarakat"'

@pytest.mark.parametrize("label,rule_part", [
    ("xn--80ak6aa92e", "must not be punycode"),          # Cyrillic look-alike of "apple"
    ("xn--simkes", "must not be punycode"),
    ("ab--cd", "positions 3-4"),
    ("a" * 64, "at most 63 characters"),
    ("a" * 5000, "at most 63 characters"),
    ("simkes;reboot", "one DNS label"),
    ("simkes$(id)", "one DNS label"),
    ("`id`", "one DNS label"),
    ("sim kes", "one DNS label"),
    ("simkes\nServerAlias evil.example", "one DNS label"),
    ("simkes\r", "one DNS label"),
    ('simkes"', "one DNS label"),
    ("simkes>", "one DNS label"),
    ("simkes/../x", "one DNS label"),
    ("simkes*", "one DNS label"),
    ("simkes_db", "one DNS label"),
    ("аpple", "ASCII only"),                             # Cyrillic а
    ("simkes\u200b", "ASCII only"),                      # zero-width space
    ("ｓimkes", "ASCII only"),                           # fullwidth s
])
def test_label_rules(label, rule_part):
    rules = naming.label_problems(label)
    assert rules and any(rule_part in r for r in rules), rules


def test_every_good_label_still_passes():
    for label in ("simkes", "a", "a1", "dinkes-2024", "x" * 63, "abc-d--e"):
        assert naming.label_problems(label) == [], label


def test_template_syntax_in_free_text_is_stored_literally(config):
    text = (GOOD.replace("name: Dinas Kesehatan Kota Tarakan", 'name: "Dinas {{ 7*7 }} {% if 1 %}x{% endif %}"')
            .replace(PURPOSE, 'purpose: "${HOME} #{7*7} {{ config }}"'))
    req = validate(text.encode(), config, today=TODAY)
    assert req.agency.name == "Dinas {{ 7*7 }} {% if 1 %}x{% endif %}"
    assert req.purpose == "${HOME} #{7*7} {{ config }}"
    assert req.summary()["agency"]["name"] == req.agency.name


def test_bidi_and_zero_width_characters_in_free_text_are_refused(config):
    found = problems(edit('name: "dr. Siti Aminah"', 'name: "dr. Siti\\u202eAminah"'), config)
    assert "printable" in found[("contact.name", line_of(GOOD, "name: \"dr."))]


def test_yaml_bombs_and_bad_scalars_are_problems_not_crashes(config):
    bomb = GOOD + 'x: &x ["a", "a"]\ny: [*x, *x]\n'
    assert any("not allowed" in r for r in problems(bomb, config).values())
    deep = GOOD.replace(PURPOSE, "purpose: " + "[" * 20000 + "]" * 20000)
    assert problems(deep, config) == {("purpose[0][0][0][0][0][0][0]", line_of(GOOD, "purpose:")):
                                      "nested deeper than 64 levels"}  # 40 KB: under the size cap
    found = problems(edit("date: 2024-08-12", "date: 2024-13-45"), config)
    assert found == {("letter.date", line_of(GOOD, "date:")):
                     "not valid YAML: value cannot be read as timestamp: month must be in 1..12"}


def test_an_oversized_file_is_refused_without_being_read(config, tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(10 * 2**20)  # sparse: 10 MB of nothing on disk
    with pytest.raises(ValidationError, match="larger than 65536 bytes"):
        load_request(big, config)


def test_an_endless_file_is_refused_after_the_size_cap():
    """/dev/zero has no size to stat; reading stops at the cap (checked in a memory-bound child)."""
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))\n"
              "from provisioner.request import read_request_file\n"
              "from provisioner.errors import ValidationError\n"
              "try:\n    read_request_file('/dev/zero')\nexcept ValidationError as err:\n    print(err)\n")
    out = __import__("subprocess").run([__import__("sys").executable, "-c", script], capture_output=True,
                                       text=True, timeout=60)
    assert "larger than 65536 bytes" in out.stdout, out.stderr[-500:]


def test_free_text_never_reaches_the_vhost_or_the_pool(config):
    """The host-side files of a request with template syntax everywhere free text goes are
    byte-identical to the plain request's: nothing typed in free text reaches a host."""
    from provisioner.inventory import load_inventory
    from provisioner.site import from_request

    hostile = (GOOD.replace("name: Dinas Kesehatan Kota Tarakan", 'name: "{{ 7*7 }} ${HOME} $(id)"')
               .replace('name: "dr. Siti Aminah"', 'name: "{% raw %}x{% endraw %} `id`"')
               .replace(PURPOSE, 'purpose: "Include /etc/shadow\\n</VirtualHost>\\n{{ lookup(\'pipe\', \'id\') }}"'))
    inventory = load_inventory(config.hosting.inventory)
    web, db = inventory.group("web")[0], inventory.group("db")[0]
    plain, evil = (from_request(validate(t.encode(), config, today=TODAY), web, db, "203.0.113.10", False)
                   for t in (GOOD, hostile))
    assert evil.vhost() == plain.vhost() and evil.pool() == plain.pool() and evil.record() == plain.record()
    assert "7*7" not in evil.vhost() and "lookup" not in evil.vhost()


def test_thousands_of_problems_are_cut_to_a_readable_list(config):
    text = GOOD + "".join(f"ticket: {i}\n" for i in range(5000))
    with pytest.raises(ValidationError) as err:
        validate(text.encode(), config, today=TODAY)
    shown = [str(p) for p in err.value.problems]
    assert len(shown) == 51 and shown[0].endswith("ticket: duplicate key")
    # 4,999 duplicates, and the one `ticket` left is an unknown field
    assert shown[-1] == "(document): 4950 more problem(s) not shown"
