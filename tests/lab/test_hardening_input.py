"""Hardening, bad input: hostile requests are refused through the CLI, and nothing is touched.

Every input goes through `provision request validate` and `provision request
submit` (click's CliRunner, as a user would call them). Each must answer with
exit code 2 and a one-line message naming the field and the rule, with no
traceback; no request may be stored, and the lab's DNS zones and every web
server's vhosts and users must read the same before and after. Times are printed, not
asserted. The alias bomb also runs in a child limited to 512 MB of address
space, which must still answer.

Then approvals bound to their SOP, against the real lab: a consultation
request approved in its own SOP gets no hosting from `provision hosting
--apply`, and a removed site's old request is refused; both touch nothing.
"""

import re
import subprocess
import sys
import time

import requests
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.lab import topology
from provisioner.letters.issue import letters_dir
from provisioner.naming import site_names

from labkit import EXAMPLES, PDNS, HUMAN_STEPS, api_headers

GOOD = (EXAMPLES / "tarakan-simkes.yaml").read_text()
PURPOSE = 'purpose: "Sistem informasi layanan kesehatan masyarakat"'
MEMORY_LIMIT = 512 * 2**20


def edit(old, new, text=GOOD):
    assert old in text, old
    return text.replace(old, new, 1)


def label(value):
    return edit("subdomain: simkes", f"subdomain: {value}")


def bomb():
    levels = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
                     for i in range(9))
    first = 'a: &a [' + ", ".join(['"lol"'] * 9) + "]\n"
    return GOOD.replace(PURPOSE + "\n", first + levels + "purpose: *j\n")


# (name, request text or bytes, field, part of the rule) -- each is refused.
CASES = [
    # Labels: injection, look-alikes, punycode, length.
    ("label newline", label('"simkes\\nServerAlias evil.example"'), "site.subdomain", "one DNS label"),
    ("label carriage return", label('"simkes\\r"'), "site.subdomain", "one DNS label"),
    ("label semicolon", label('"simkes;reboot"'), "site.subdomain", "one DNS label"),
    ("label command substitution", label('"$(id)"'), "site.subdomain", "one DNS label"),
    ("label backticks", label('"`id`"'), "site.subdomain", "one DNS label"),
    ("label pipe", label('"a|b"'), "site.subdomain", "one DNS label"),
    ("label ampersand", label('"a&b"'), "site.subdomain", "one DNS label"),
    ("label quote", label("'a\"b'"), "site.subdomain", "one DNS label"),
    ("label angle brackets", label('"<VirtualHost>"'), "site.subdomain", "one DNS label"),
    ("label space", label('"sim kes"'), "site.subdomain", "one DNS label"),
    ("label hash", label('"a#b"'), "site.subdomain", "one DNS label"),
    ("label apache variable", label('"%{HTTP_HOST}"'), "site.subdomain", "one DNS label"),
    ("label backslash", label('"a\\\\b"'), "site.subdomain", "one DNS label"),
    ("label path", label('"../../etc"'), "site.subdomain", "one DNS label"),
    ("label glob", label('"sim*"'), "site.subdomain", "one DNS label"),
    ("label underscore", label("sim_kes"), "site.subdomain", "one DNS label"),
    ("label dot", label("sim.kes"), "site.subdomain", "one DNS label"),
    ("label uppercase", label("SIMKES"), "site.subdomain", "one DNS label"),
    ("label leading hyphen", label('"-simkes"'), "site.subdomain", "one DNS label"),
    ("label empty", label('""'), "site.subdomain", "one DNS label"),
    ("label all digits", label('"2024"'), "site.subdomain", "all digits"),
    ("label reserved", label("www"), "site.subdomain", "reserved"),
    ("label cyrillic look-alike", label("аpple"), "site.subdomain", "ASCII only"),
    ("label fullwidth", label("ｓimkes"), "site.subdomain", "ASCII only"),
    ("label zero-width space", label('"sim\\u200bkes"'), "site.subdomain", "ASCII only"),
    ("label arabic-indic digit", label("simkes٣"), "site.subdomain", "ASCII only"),
    ("label punycode apple", label("xn--80ak6aa92e"), "site.subdomain", "must not be punycode"),
    ("label reserved hyphens", label("ab--cd"), "site.subdomain", "positions 3-4"),
    ("label 64 characters", label("a" * 64), "site.subdomain", "at most 63 characters"),
    ("label 5000 characters", label("a" * 5000), "site.subdomain", "at most 63 characters"),
    ("label not text", label("12345"), "site.subdomain", "must be text"),
    # Other fields that reach names or records.
    ("zone injection", edit("zone: tarakankota.go.id", 'zone: "tarakankota.go.id\\nServerAlias x"'),
     "site.zone", "zone the office manages"),
    ("zone look-alike", edit("zone: tarakankota.go.id", "zone: tarakankоta.go.id"), "site.zone", "zone the office"),
    ("id newline", edit("id: HST-2024-0007", 'id: "HST-2024-0007\\n"'), "id", "must look like"),
    ("agency code look-alike", edit("code: DINKES", "code: DİNKES"), "agency.code", "capital letters"),
    ("nip arabic-indic digits", edit('nip: "198001012005012003"', 'nip: "١٩٨٠٠١٠١٢٠٠٥٠١٢٠٠٣"'),
     "contact.nip", "18 digits"),
    ("phone fullwidth", edit('phone: "081234567890"', 'phone: "０８１２３４５６７８９０"'), "contact.phone", "mobile"),
    ("email header injection", edit('email: "datin@dinkes.tarakankota.go.id"',
                                    'email: "datin@dinkes.tarakankota.go.id\\nBcc: x@example.org"'),
     "contact.email", "e-mail"),
    ("agency name newline", edit("name: Dinas Kesehatan Kota Tarakan", 'name: "Dinas\\nX-Header: 1"'),
     "agency.name", "line breaks"),
    ("contact name bidi override", edit('name: "dr. Siti Aminah"', 'name: "dr. Siti\\u202eAminah"'),
     "contact.name", "printable"),
    ("subject escape character", edit('subject: "Permohonan', 'subject: "\\u001b[31mPermohonan'),
     "letter.subject", "printable"),
    ("purpose over-long", edit(PURPOSE, f'purpose: "{"x" * 1001}"'), "purpose", "at most 1000"),
    ("agency name over-long", edit("name: Dinas Kesehatan Kota Tarakan", f"name: {'D' * 201}"),
     "agency.name", "at most 200"),
    # Wrong types.
    ("quota as text", edit("quota_mb: 2048", 'quota_mb: "2048"'), "site.quota_mb", "whole number"),
    ("quota as bool", edit("quota_mb: 2048", "quota_mb: true"), "site.quota_mb", "whole number"),
    ("database as text", edit("database: true", 'database: "yes"'), "site.database", "true or false"),
    ("php version as float", edit('php_version: "8.2"', "php_version: 8.2"), "site.php_version", "quote it"),
    ("site as a list", re.sub(r"(?ms)^site:\n.*?(?=^purpose)", "site: [a, b]\n", GOOD), "site", "mapping"),
    ("document a list", "- a\n- b\n", "(document)", "mapping of fields"),
    ("timestamp out of range", edit("date: 2024-08-12", "date: 2024-13-45"), "letter.date",
     "cannot be read as timestamp"),
    ("bool tag maybe", edit("tls: true", "tls: !!bool maybe"), "site.tls", "cannot be read as bool"),
    ("python tag", edit("tls: true", "tls: !!python/object/apply:os.system [id]"), "site.tls",
     "could not determine a constructor"),
    ("huge integer", edit("quota_mb: 2048", f"quota_mb: {'9' * 5000}"), "site.quota_mb", "cannot be read as int"),
    # YAML structure.
    ("duplicate key", edit("  tls: true", "  tls: true\n  tls: false"), "site.tls", "duplicate key"),
    ("duplicate section", GOOD + "site:\n  subdomain: other\n", "site", "duplicate key"),
    ("alias bomb", bomb(), "a", "anchors are not allowed"),
    ("one alias", GOOD + "x: &x 1\n", "x", "anchors are not allowed"),
    ("merge key alias", GOOD + "other: {<<: *base}\n", "other.<<", "aliases are not allowed"),
    ("20,000 nested brackets", edit(PURPOSE, "purpose: " + "[" * 20000 + "]" * 20000), "purpose",
     "nested deeper than 64"),
    ("10,000 nested mappings", edit(PURPOSE, "purpose: " + "{a: " * 10000 + "1" + "}" * 10000), "purpose",
     "nested deeper than 64"),
    ("unclosed flow", GOOD + "x: [unclosed\n", "(document)", "not valid YAML"),
    ("two documents", GOOD + "---\nid: HST-2024-0008\n", "(document)", "single document"),
    ("nul byte", GOOD + "x: \x00\n", "(document)", "not valid YAML"),
    ("not utf-8", GOOD.encode() + b"x: \xff\xfe\n", "(document)", "not UTF-8"),
    ("10 MB file", GOOD.encode() + b"#" * (10 * 2**20), "(document)", "larger than 65536 bytes"),
    # A service the office does not run.
    ("service not run by the office", (EXAMPLES / "buleleng-sipandu.yaml").read_text()
     .replace("service: hosting", "service: konsultasi-aplikasi"), "service", "office buleleng runs"),
]


def _zone(zone):
    reply = requests.get(f"{PDNS}/zones/{zone}.", headers=api_headers(), timeout=10)
    reply.raise_for_status()
    return sorted((r["name"], r["type"], tuple(sorted(x["content"] for x in r["records"])))
                  for r in reply.json()["rrsets"] if r["type"] != "SOA")


WEB_HOSTS = [h.name for h in topology.hosts_of("web")]


def snapshot(lab_host):
    """What an input must never change: both zones, and every web server's vhosts and users."""
    return {
        "dns": {z: _zone(z) for z in ("tarakankota.go.id", "bulelengkab.go.id")},
        **{f"{name} vhosts": lab_host(name).check_output("ls -1 /etc/apache2/sites-available /etc/apache2/sites-enabled")
           for name in WEB_HOSTS},
        **{f"{name} users": lab_host(name).check_output("cut -d: -f1 /etc/passwd | sort") for name in WEB_HOSTS},
    }


def cli(*args):
    started = time.monotonic()
    result = CliRunner().invoke(main, list(args))
    return result, time.monotonic() - started


def test_bad_input_is_refused_with_one_line_each_and_nothing_touched(office, lab_host, tmp_path):
    before = snapshot(lab_host)
    tried = 0
    for name, content, field, rule in CASES:
        path = tmp_path / f"{re.sub(r'[^a-z0-9]+', '-', name)}.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        for command in ("validate", "submit"):
            result, took = cli("request", command, str(path))
            tried += 1
            print(f"{command:8} {name:32} {took * 1000:7.1f} ms")
            output = result.output
            assert result.exit_code == 2, (name, command, output)
            assert "Traceback" not in output
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            # The named field and rule are on one line of the answer.
            assert any(field in line and rule in line for line in output.splitlines()), (name, command, output)
            if command == "validate":
                assert all(line.startswith(f"{path}:") for line in output.splitlines()), output
            else:
                assert len(output.strip().splitlines()) == 1, output
        assert office.engine.list_requests() == [], name
    assert snapshot(lab_host) == before
    print(f"bad inputs tried: {len(CASES)} inputs x validate and submit = {tried} refusals")


def test_the_alias_bomb_answers_within_512_mb(office, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    assert path.stat().st_size < 2048
    script = ("import resource\n"
              f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
              "from provisioner.cli import main\n"
              "main()\n")
    for command in ("validate", "submit"):
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", script, "request", command, str(path)],
                             capture_output=True, text=True, timeout=300)
        print(f"alias bomb, {command}, 512 MB limit: {time.monotonic() - started:.2f} s")
        assert out.returncode == 2, out.stderr[-2000:]
        assert "anchors are not allowed (&a)" in out.stderr and "Traceback" not in out.stderr
    assert office.engine.list_requests() == []


def test_template_syntax_in_free_text_is_stored_and_shown_literally(office, lab_host):
    """A live site whose request carries template syntax: the letter shows it literally, the
    vhost never sees it; then the site is removed and its old approval provisions nothing."""
    agency = "Dinas {{ 7*7 }} {% if true %}IF{% endif %} ${HOME}"
    request_id, path = office.request("tarakan-simkes.yaml")
    path.write_text(path.read_text().replace("name: Dinas Kesehatan Kota Tarakan", f'name: "{agency}"'))
    office.engine.submit(path.read_bytes(), str(path))
    for step, role in HUMAN_STEPS:
        office.engine.record_step(request_id, step, role)
    outcome = office.engine.decide(request_id, True, "kadis")
    assert [a["action"] for a in outcome.actions] == ["provision_site", "render_letter"]
    fqdn = outcome.actions[0]["result"]["fqdn"]
    html = (letters_dir(office.config) / f"{request_id}-surat-konfigurasi.html").read_text()
    assert f"Yth. Kepala {agency}" in html and "Dinas 49" not in html
    web = lab_host(office.site(fqdn).web_host)
    vhost = web.file(f"/etc/apache2/sites-available/{fqdn}.conf").content_string
    assert "7*7" not in vhost and "Dinas" not in vhost and f"ServerName {fqdn}" in vhost

    office.hosting.remove([fqdn])
    names = site_names(fqdn.split(".")[0], "tarakankota.go.id")
    before = snapshot(lab_host)
    for args in (["hosting", request_id], ["hosting", request_id, "--apply"], ["hosting", str(path), "--apply"]):
        result, took = cli(*args)
        print(f"removed site's old request: {' '.join(args[:1] + args[2:])}: {took:.2f} s")
        assert result.exit_code == 2, result.output
        assert "needs a new request" in result.output and "Traceback" not in result.output
    assert snapshot(lab_host) == before
    assert not web.user(names.user).exists
    assert not web.file(f"/etc/apache2/sites-enabled/{fqdn}.conf").exists
    assert office.site(fqdn).state == "removed"


def test_a_consultation_approved_in_its_own_sop_gets_no_hosting(office, lab_host):
    # A consultation that names the hosting its application will need: a name hosting could build.
    request_id, path = office.request("tarakan-konsultasi-simpeg.yaml")
    label = f"t{request_id[-4:]}k"
    path.write_text(path.read_text().replace("purpose:", "  hosting:\n"
        f"    subdomain: {label}\n    zone: tarakankota.go.id\n    stack: static\n    database: false\n"
        "    quota_mb: 100\n    bandwidth_kbps: 0\n    dedicated_ip: false\n    tls: false\npurpose:", 1))
    office.engine.submit(path.read_bytes(), str(path))
    for step, role in HUMAN_STEPS:
        office.engine.record_step(request_id, step, role)
    office.engine.decide(request_id, True, "bidang_aplikasi")  # the consultation SOP's decision role
    assert office.engine.show(request_id)["state"] == "approved"
    fqdn = office.engine.show(request_id)["fqdn"]
    assert fqdn == f"{label}.tarakankota.go.id"
    names = site_names(label, "tarakankota.go.id")
    before = snapshot(lab_host)
    for args in (["hosting", request_id], ["hosting", request_id, "--apply"]):
        result, took = cli(*args)
        print(f"consultation approval: {' '.join(args[:1] + args[2:])}: {took:.2f} s")
        assert result.exit_code == 2, result.output
        assert "does not provision hosting" in result.output and "Traceback" not in result.output
    assert snapshot(lab_host) == before
    assert office.site(fqdn) is None
    for name in WEB_HOSTS:  # never placed: on no web server
        assert not lab_host(name).user(names.user).exists
        assert not lab_host(name).file(f"/etc/apache2/sites-available/{fqdn}.conf").exists
    with office.store.session() as session:
        from provisioner.store.models import Event
        kinds = {e.kind for e in session.query(Event).filter(Event.request_id == request_id)}
    assert not kinds & {"apply_started", "saga_intent", "site_provisioned"}
