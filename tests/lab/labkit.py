"""What the lab tests share: an office (its own state home, engine and hosting) and its requests."""

import re
import secrets
from pathlib import Path

from provisioner.config import load_config
from provisioner.errors import HostError
from provisioner.hosting import Hosting
from provisioner.lab import guard, lifecycle, topology
from provisioner.sop.engine import Engine
from provisioner.store import open_store
from provisioner.store.models import Event, SiteRow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PDNS = f"http://{topology.primary_ns().address}:{topology.PDNS_API_PORT}/api/v1/servers/localhost"
HUMAN_STEPS = [("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")]


class Office:
    """A state home with its engine and hosting, that cleans its sites up."""

    def __init__(self, home: Path):
        self.home = home
        self.config = load_config()
        self.store = open_store(self.config.resolved_state_url())
        self.engine = Engine(self.config, self.store)
        self.hosting = Hosting(self.config, self.store)

    def request(self, example: str, **site) -> tuple[str, Path]:
        """A new request file from an example, with a fresh id and subdomain."""
        text = (EXAMPLES / example).read_text()
        # Random letters too: ids from 10,000 numbers alone collide in a batch of a few dozen.
        letters = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
        request_id = f"T{letters}-2024-{secrets.randbelow(10000):04d}"
        label = site.pop("subdomain", f"t{secrets.token_hex(4)}")
        text = re.sub(r"(?m)^id: .*$", f"id: {request_id}", text)
        text = re.sub(r"(?m)^  subdomain: .*$", f"  subdomain: {label}", text)
        for key, value in site.items():
            text = re.sub(rf"(?m)^  {key}: .*$", f"  {key}: {value}", text)
        path = self.home / f"{request_id}.yaml"
        path.write_text(text)
        return request_id, path

    def through_review(self, example: str, **site) -> str:
        request_id, path = self.request(example, **site)
        self.engine.submit(path.read_bytes(), str(path))
        for step, role in HUMAN_STEPS:
            self.engine.record_step(request_id, step, role)
        return request_id

    def approve_without_hook(self, request_id: str) -> None:
        """Record the decision like the SOP does, but leave provisioning to the test."""
        from provisioner.sop import hooks

        def later(ctx):
            raise HostError("provisioning left to the test")

        saved = hooks.ACTIONS._actions["provision_site"]
        self.engine.actions._actions["provision_site"] = later
        try:
            self.engine.decide(request_id, True, "kadis")
        except Exception:
            pass
        finally:
            self.engine.actions._actions["provision_site"] = saved

    def site(self, fqdn: str) -> SiteRow | None:
        with self.store.session() as session:
            return session.get(SiteRow, fqdn)

    def events(self, kind: str) -> list[Event]:
        with self.store.session() as session:
            return list(session.query(Event).filter(Event.kind == kind))

    def live_sites(self) -> list[str]:
        with self.store.session() as session:
            return [r.fqdn for r in session.query(SiteRow).filter(SiteRow.state != "removed")]

    def cleanup(self) -> None:
        """Remove every site this office still has: all in one removal (one run per host), and
        if that stops, each remaining one alone, so one broken site does not keep the others."""
        live = self.live_sites()
        if not live:
            return
        try:
            self.hosting.remove(live)
        except Exception:  # noqa: BLE001 - retried site by site below, where the error surfaces
            for fqdn in self.live_sites():
                self.hosting.remove([fqdn])




def api_headers() -> dict:
    guard.require_lab_route(topology.primary_ns().address)
    return {"X-API-Key": lifecycle.pdns_api_key()}
