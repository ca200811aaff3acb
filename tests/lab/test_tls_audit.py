"""The audit's certificate findings against the real lab: a site with a certificate from the lab's
ACME CA (Pebble on ca1) is clean and its expiry figures are in the JSON report; a self-signed
certificate for another name put in its place behind the toolkit's back is `tls-name` and
`tls-issuer`; `audit --fix --apply` renews it and the audit after it has no certificate finding.

One site of its own (a random label, its own state home), removed afterwards; the certificate
files on its web server are put back in a finally if the fix did not replace them.
"""

import json
import shlex
import traceback

from click.testing import CliRunner

from provisioner import audit
from provisioner.cli import main
from provisioner.store.models import SiteRow

TLS_KINDS = {"tls-expired", "tls-expiring", "tls-name", "tls-issuer", "tls-unreachable", "tls-missing"}
FOREIGN = "not-this-site.invalid"


def _tls(findings):
    return sorted(f["kind"] if isinstance(f, dict) else f.kind for f in findings
                  if (f["kind"] if isinstance(f, dict) else f.kind) in TLS_KINDS)


def _audit_json(*args):
    result = CliRunner().invoke(main, ["audit", "--format", "json", *args])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.output)


def _sh(host, script: str) -> str:
    return host.check_output("sh -c %s", script)


def test_audit_reports_a_foreign_certificate_and_the_fix_renews_it(office, lab_host):
    request_id = office.through_review("tarakan-simkes.yaml")
    office.approve_without_hook(request_id)
    office.hosting.apply([request_id])
    with office.store.session() as session:
        ((fqdn, web_host),) = [(r.fqdn, r.web_host) for r in
                               session.query(SiteRow).filter(SiteRow.request_id == request_id)]
    web = lab_host(web_host)
    crt, key = f"/etc/ssl/provisioner/{fqdn}.crt", f"/etc/ssl/provisioner/{fqdn}.key"

    # Healthy: a certificate from Pebble, valid for weeks, no certificate finding, figures in the JSON.
    code, data = _audit_json("--site", fqdn)
    assert code == 0 and data["findings"] == [], data["findings"]
    figures = data["certificates"][fqdn]
    assert figures["trusted"] is True and fqdn in figures["names"]
    assert figures["days_left"] > audit.EXPIRING_DAYS and figures["not_after"][:4].isdigit()
    assert "pebble" in figures["issuer"].lower(), figures
    served_before = figures["not_after"]

    # Behind the toolkit's back: a self-signed certificate for another name, made on its web server (its key
    # never leaves the host), the originals kept in a private directory of root's.
    backup = _sh(web, "mktemp -d /root/audit-tls.XXXXXX").strip()
    q = {k: shlex.quote(v) for k, v in {"crt": crt, "key": key, "bak": backup}.items()}
    try:
        _sh(web, f"cp -a {q['crt']} {q['key']} {q['bak']}/ && "
                 f"openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN={FOREIGN} "
                 f"-addext subjectAltName=DNS:{FOREIGN} -keyout {q['key']} -out {q['crt']} 2>/dev/null && "
                 f"cp {q['crt']} {q['bak']}/foreign.crt && apache2ctl graceful")
        code, data = _audit_json("--site", fqdn)
        assert code == 1
        assert _tls(data["findings"]) == ["tls-issuer", "tls-name"], data["findings"]
        name = next(f for f in data["findings"] if f["kind"] == "tls-name")
        assert name["found"] == f"names {FOREIGN}" and name["host"] == web_host
        assert name["fix"] == f"renew: provision audit --fix --apply --site {fqdn}"
        issuer = next(f for f in data["findings"] if f["kind"] == "tls-issuer")
        assert FOREIGN in issuer["found"]
        assert data["certificates"][fqdn]["trusted"] is False

        # The fix plans the renewal; applied with the checksum reviewed, it serves a new certificate.
        plan = CliRunner().invoke(main, ["audit", "--fix", "--site", fqdn, "--format", "json"])
        assert plan.exit_code == 1, plan.output
        fix = json.loads(plan.output)["fix"]
        assert f"TLS certificate: {fqdn}" in fix["rendered"] and fix["applied"] is False
        assert not [f for f in fix["by_hand"] if f["kind"] in ("tls-name", "tls-issuer")]
        done = CliRunner().invoke(main, ["audit", "--fix", "--apply", "--checksum", fix["plan"]["checksum"],
                                         "--site", fqdn, "--format", "json"])
        assert done.output.strip(), "".join(traceback.format_exception(done.exception))
        report = json.loads(done.output)
        assert done.exit_code == 0, report.get("after")
        assert report["fix"]["applied"] is True and report["fix"]["renewed"]
        assert _tls(report["after"]["findings"]) == []
        code, data = _audit_json("--site", fqdn)
        assert code == 0 and data["findings"] == []
        renewed = data["certificates"][fqdn]
        assert renewed["trusted"] is True and fqdn in renewed["names"]
        assert renewed["not_after"] >= served_before
        assert _sh(web, f"cmp -s {q['crt']} {q['bak']}/foreign.crt || echo replaced").strip() == "replaced"
    finally:
        # Put the originals back only if the self-signed certificate is still in place.
        _sh(web, f"if cmp -s {q['crt']} {q['bak']}/foreign.crt && [ -e {q['bak']}/{fqdn}.key ]; then "
                 f"cp -a {q['bak']}/{fqdn}.crt {q['crt']} && cp -a {q['bak']}/{fqdn}.key {q['key']} && "
                 f"apache2ctl graceful; fi; rm -rf -- {q['bak']}")
