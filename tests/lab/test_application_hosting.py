"""An application request that needs hosting: `provision request spawn-hosting` on the real lab.

The Buleleng application/API SOP runs to the Kasi's approval; the hosting
request spawned from it then goes through the office's own hosting SOP, and the
head's approval there provisions the site (verified from outside by the
provisioning itself, and checked here again over HTTP).
"""

import re
import secrets

import requests
from click.testing import CliRunner
from sqlalchemy import select

from provisioner.cli import main
from provisioner.store.models import Event, RequestRow

from labkit import EXAMPLES, HUMAN_STEPS

APPLICATION_STEPS = [("disposisi_kadis", "kadis"), ("disposisi_kabid", "kabid"),
                     ("terima_kasi", "kasi"), ("koordinasi", "kasi")]


def test_an_approved_application_spawns_a_hosting_request_that_provisions(office):
    parent = f"KOM-2024-{secrets.randbelow(10000):04d}"
    label = f"t{secrets.token_hex(4)}"
    text = (EXAMPLES / "buleleng-api-sipandu.yaml").read_text()
    text = re.sub(r"(?m)^id: .*$", f"id: {parent}", text)
    # A small site: PHP and a database, no certificate (the TLS tests prove that part).
    text = text.replace("    subdomain: perizinan", f"    subdomain: {label}").replace("    tls: true", "    tls: false")
    path = office.home / f"{parent}.yaml"
    path.write_text(text)
    fqdn = f"{label}.bulelengkab.go.id"

    office.engine.submit(path.read_bytes(), str(path))
    for step, role in APPLICATION_STEPS:
        office.engine.record_step(parent, step, role)
    office.engine.record_step(parent, "analisa", "programmer", data_file=str(EXAMPLES / "data" / "analisa-sipandu.yaml"))

    # Before the Kasi's approval there is nothing to spawn from.
    refused = CliRunner().invoke(main, ["request", "spawn-hosting", parent])
    assert refused.exit_code == 2 and "approved" in refused.output, refused.output

    office.engine.decide(parent, True, "kasi", reason="Tim programmer tersedia")
    result = CliRunner().invoke(main, ["request", "spawn-hosting", parent, "--json"])
    assert result.exit_code == 0, result.output
    with office.store.session() as session:
        child = session.scalars(select(RequestRow).where(RequestRow.linked_to == parent)).one()
        assert (child.service, child.office, child.fqdn) == ("hosting", "buleleng", fqdn)
        child_id = child.id
    assert child_id in result.output
    # A second call finds the request made before and makes no other.
    again = CliRunner().invoke(main, ["request", "spawn-hosting", parent])
    assert again.exit_code == 0 and child_id in again.output, again.output
    with office.store.session() as session:
        assert len(session.scalars(select(RequestRow).where(RequestRow.linked_to == parent)).all()) == 1

    # The hosting SOP takes over: its own steps, its own head's approval, which provisions.
    assert office.site(fqdn) is None
    for step, role in HUMAN_STEPS:
        office.engine.record_step(child_id, step, role)
    office.engine.decide(child_id, True, "kadis")
    site = office.site(fqdn)
    assert site is not None and site.state == "provisioned", site and (site.state, site.reason)
    assert site.request_id == child_id and site.db_host

    answer = requests.get(f"http://{site.public_ip}/", headers={"Host": fqdn}, timeout=10)
    assert answer.status_code == 200
    kinds = {(e.request_id, e.kind) for e in office.events("hosting_spawned")}
    assert {(parent, "hosting_spawned"), (child_id, "hosting_spawned")} <= kinds
    assert office.engine.show(child_id)["state"] in ("approved", "done")
