"""Each service's request shape: website, konsultasi-aplikasi, aplikasi-api (and hosting kept as it was)."""

from datetime import date

import pytest

from provisioner.config import REPO_ROOT
from provisioner.errors import ValidationError
from provisioner.request import Site, load_request, validate

EXAMPLES = REPO_ROOT / "examples"
TODAY = date(2024, 9, 30)
WEBSITE = (EXAMPLES / "tarakan-website-dinkes.yaml").read_text()
KONSULTASI = (EXAMPLES / "tarakan-konsultasi-simpeg.yaml").read_text()
API = (EXAMPLES / "buleleng-api-sipandu.yaml").read_text()


def edit(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


def problems(text, config, stored=False):
    with pytest.raises(ValidationError) as err:
        validate(text.encode(), config, today=TODAY, stored=stored)
    return {(p.field, p.line): p.rule for p in err.value.problems}


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("name", ["tarakan-website-dinkes.yaml", "tarakan-konsultasi-simpeg.yaml",
                                  "buleleng-api-sipandu.yaml"])
def test_the_new_examples_are_valid(config, name):
    req = load_request(EXAMPLES / name, config, today=TODAY)
    assert req.site is None and req.linked_request is None
    assert req.summary()["id"] == req.id


def test_website_request_fields(config):
    req = validate(WEBSITE.encode(), config, today=TODAY)
    assert (req.service, req.office, req.fqdn) == ("website", "tarakan", "dinkes.tarakankota.go.id")
    site = req.website
    assert (site.source, site.ref, site.health_check) == ("/srv/konten/dinkes-1.0.tar.gz", None, "/healthz.txt")
    assert site.hosting.stack == "php" and site.hosting.quota_mb == 1024
    assert req.hosting_site == Site("dinkes", "tarakankota.go.id", "php", "8.2", True, 1024, 0, False, True)
    shown = req.summary()
    assert shown["website"]["fqdn"] == "dinkes.tarakankota.go.id" and "site" not in shown


def test_website_update_without_hosting_and_default_health_check(config):
    text = WEBSITE.split("  hosting:")[0].replace("  health_check: /healthz.txt\n", "") + "purpose: Pemutakhiran\n"
    req = validate(text.encode(), config, today=TODAY)
    assert req.website.hosting is None and req.website.health_check == "/" and req.hosting_site is None


@pytest.mark.parametrize("source,location,ref", [
    ("/srv/konten/dinkes-1.0.tar.gz", "/srv/konten/dinkes-1.0.tar.gz", None),
    ("/srv/git/dinkes@v1.2", "/srv/git/dinkes", "v1.2"),
    ("https://git.example.go.id/dinkes/web.git@release/2024-08", "https://git.example.go.id/dinkes/web.git",
     "release/2024-08"),
    ("https://user@git.example.go.id/web.git", "https://user@git.example.go.id/web.git", None),
    ("git@git.example.go.id:dinkes/web.git", "git@git.example.go.id:dinkes/web.git", None),
    ("git@git.example.go.id:dinkes/web.git@3f2a9c1", "git@git.example.go.id:dinkes/web.git", "3f2a9c1"),
    ("ssh://git@git.example.go.id:2222/web.git@main", "ssh://git@git.example.go.id:2222/web.git", "main"),
    ("file:///srv/git/web@main", "file:///srv/git/web", "main"),
])
def test_website_sources_and_refs(config, source, location, ref):
    req = validate(edit(WEBSITE, "source: /srv/konten/dinkes-1.0.tar.gz", f"source: {source}").encode(),
                   config, today=TODAY)
    assert (req.website.source, req.website.ref) == (location, ref)


@pytest.mark.parametrize("source,rule_part", [
    ("srv/konten/a.tar.gz", "absolute path on the controller"),
    ("/srv/../etc/shadow", "without . or .. components"),
    ('"/srv/konten/a b.tar.gz"', "without spaces"),
    ("http://git.example.go.id/web.git", "git URL"),
    ("--upload-pack=touch", "git URL"),
    ("/srv/git/web@-x", "git branch, tag or commit"),
    ("/srv/git/web@a..b", "git branch, tag or commit"),
    ("/srv/git/web@a:b", "git branch, tag or commit"),
    ('"/srv/konten/\\u0000.tar.gz"', "printable ASCII"),
    ("12", "must be text"),
    # git would read these as an ssh option, or leave the directory named
    ("file:///srv/git/../../etc/web", "without . or .. components"),
    ("file:///srv/git/./web@main", "without . or .. components"),
    ("file:///srv/git/%2e%2e/web", "without . or .. components"),
    ("ssh://-oProxyCommand=touch/web.git", "not starting with -"),
    ("ssh://git@-oProxyCommand=x/web.git", "not starting with -"),
    ("git@-oProxyCommand=x:web.git", "not starting with -"),
    ("-x@git.example.go.id:web.git", "not starting with -"),
    ("https://-git.example.go.id/web.git", "not starting with -"),
    ("https://git.example.go.id/web%20x.git", "spaces or control characters"),
    ("file:///srv/git/web%0a.git", "spaces or control characters"),
    ('"/srv/konten/a\tb.tar.gz"', "without spaces"),
])
def test_bad_website_sources(config, source, rule_part):
    text = edit(WEBSITE, "source: /srv/konten/dinkes-1.0.tar.gz", f"source: {source}")
    found = problems(text, config)
    assert rule_part in found[("website.source", line_of(text, "source:"))]


@pytest.mark.parametrize("value", ["healthz", '"/a b"', '"/' + "x" * 200 + '"', '"/é"'])
def test_bad_health_check(config, value):
    text = edit(WEBSITE, "health_check: /healthz.txt", f"health_check: {value}")
    assert "starting with /" in problems(text, config)[("website.health_check", line_of(text, "health_check"))]


def test_website_problems_all_at_once_with_lines(config):
    text = edit(WEBSITE, "subdomain: dinkes", "subdomain: www")
    text = edit(text, "zone: tarakankota.go.id", "zone: example.go.id")
    text = edit(text, "quota_mb: 1024", "quota_mb: 0")
    text = edit(text, "    tls: true", "    tls: true\n    colour: red")
    text = edit(text, "  health_check: /healthz.txt", "  health_check: /healthz.txt\n  sorce: /x")
    found = problems(text, config)
    assert "reserved" in found[("website.subdomain", line_of(text, "subdomain:"))]
    assert "zone the office manages" in found[("website.zone", line_of(text, "zone:"))]
    assert "between 1 and" in found[("website.hosting.quota_mb", line_of(text, "quota_mb"))]
    assert found[("website.hosting.colour", line_of(text, "colour"))].startswith("unknown field")
    assert found[("website.sorce", line_of(text, "sorce"))].startswith("unknown field")


def test_sections_belong_to_their_service(config):
    text = edit(WEBSITE, "purpose:", "site:\n  subdomain: x\npurpose:")
    site_line = text.splitlines().index("site:") + 1
    assert problems(text, config)[("site", site_line)].startswith("only for service hosting")
    text = edit(KONSULTASI, "service: konsultasi-aplikasi", "service: website")
    found = problems(text, config)
    assert found[("website", 1)] == "required"
    assert "only for service aplikasi-api or konsultasi-aplikasi" in found[("application", line_of(text, "application:"))]


def test_konsultasi_request_fields(config):
    req = validate(KONSULTASI.encode(), config, today=TODAY)
    app = req.application
    assert req.office == "tarakan" and req.fqdn is None and req.hosting_site is None
    assert app.name == "Sistem Informasi Kepegawaian Daerah" and app.budget_source == "APBD Kota Tarakan TA 2025"
    assert "lembar kerja" in app.need and app.kind is None and app.integrations == ()


def test_konsultasi_rules(config):
    text = edit(KONSULTASI, "  budget_source: APBD Kota Tarakan TA 2025\n", "  kind: new\n")
    found = problems(text, config)
    assert found[("application.budget_source", line_of(text, "application:"))] == "required"
    assert found[("application.kind", line_of(text, "kind:"))] == "only for service aplikasi-api"


def test_api_request_fields(config):
    req = validate(API.encode(), config, today=TODAY)
    app = req.application
    assert (req.office, req.fqdn) == ("buleleng", "perizinan.bulelengkab.go.id")
    assert (app.kind, app.kind_text, app.extends) == ("extend", "pengembangan", "SIPANDU versi 1")
    assert app.integrations == ("SIAK Dukcapil", "OSS RBA") and app.budget_source is None
    assert req.hosting_site == app.hosting and app.hosting.dedicated_ip is False


@pytest.mark.parametrize("old,new,field,rule_part", [
    ("  kind: extend\n", "  kind: rebuild\n", "application.kind", "new (pembuatan) or extend"),
    ("  extends: SIPANDU versi 1\n", "", "application.extends", "required"),
    ("  kind: extend\n", "  kind: new\n", "application.extends", "only with kind: extend"),
    ("  integrations: [SIAK Dukcapil, OSS RBA]", "  integrations: SIAK", "application.integrations", "a list"),
    ("  integrations: [SIAK Dukcapil, OSS RBA]", "  integrations: [" + ", ".join(["x"] * 21) + "]",
     "application.integrations", "at most 20"),
    ("  integrations: [SIAK Dukcapil, OSS RBA]", '  integrations: ["a\\nb"]', "application.integrations[0]",
     "one line"),
    ("    subdomain: perizinan", "    subdomain: mail", "application.hosting.subdomain", "reserved"),
    ("    zone: bulelengkab.go.id", "    zone: tarakankota.go.id", "service", "office tarakan runs"),
    ("    tls: true", "    tls: true\n    cpu: 4", "application.hosting.cpu", "unknown field"),
    ("  name: SIPANDU - Sistem Informasi Pelayanan Terpadu", "  name: \"\"", "application.name", "not be empty"),
])
def test_api_rules(config, old, new, field, rule_part):
    text = edit(API, old, new)
    found = problems(text, config)
    assert any(f == field and rule_part in rule for (f, _line), rule in found.items()), found


def test_api_scope_is_required(config):
    text = API.replace("  scope: |\n    Modul pelacakan status berkas bagi pemohon dan layanan API perizinan\n"
                       "    (baca saja) untuk perangkat daerah teknis.\n", "")
    assert problems(text, config)[("application.scope", line_of(text, "application:"))] == "required"


def test_application_office_without_hosting(config):
    """No zone: the one office running the service; a named office must agree with a zone."""
    no_hosting = API.split("  hosting:")[0] + 'purpose: "Pengembangan"\n'
    assert validate(no_hosting.encode(), config, today=TODAY).office == "buleleng"
    text = edit(API, "purpose:", "office: tarakan\npurpose:")
    assert "must be buleleng, the office of zone" in problems(text, config)[("office", line_of(text, "office:"))]
    text = edit(no_hosting, "purpose:", "office: nowhere\npurpose:")
    assert "one of the offices" in problems(text, config)[("office", line_of(text, "office:"))]


def test_linked_request_field(config):
    """Only spawn-hosting names a parent: a person's request naming one would hang on its waiting step."""
    simkes = (EXAMPLES / "tarakan-simkes.yaml").read_text()
    text = simkes + "linked_request: WEB-2024-0012\n"
    assert problems(text, config)[("linked_request", line_of(text, "linked_request"))] == (
        "set only by `provision request spawn-hosting`")
    for flags in ({"spawned": True}, {"stored": True}):
        req = validate(text.encode(), config, today=TODAY, **flags)
        assert req.linked_request == "WEB-2024-0012" and req.summary()["linked_request"] == "WEB-2024-0012"
    bad = simkes + "linked_request: web-1\n"
    with pytest.raises(ValidationError) as err:
        validate(bad.encode(), config, today=TODAY, spawned=True)
    assert "request id" in {(p.field, p.line): p.rule for p in err.value.problems}[
        ("linked_request", line_of(bad, "linked_request"))]


def test_a_stored_request_of_the_old_shape_still_reads(config):
    """Before each service had its shape, a consultation gave `site:`; stored ones read as accepted."""
    old = (EXAMPLES / "tarakan-simkes.yaml").read_text().replace("service: hosting", "service: konsultasi-aplikasi")
    assert ("application", 1) in problems(old, config)
    req = validate(old.encode(), config, today=TODAY, stored=True)
    assert req.site.fqdn == "simkes.tarakankota.go.id" and req.fqdn == req.site.fqdn and req.application is None


def test_a_request_in_another_services_shape_is_told_the_service_its_office_does_not_run(config):
    """A consultation written as a hosting request for a Buleleng name: Buleleng runs no consultation."""
    text = (EXAMPLES / "buleleng-sipandu.yaml").read_text().replace("service: hosting", "service: konsultasi-aplikasi")
    found = problems(text, config)
    assert found[("service", 3)].startswith("must be a service office buleleng runs")
    assert found[("application", 1)] == "required"
