"""The per-site saga of an apply: the steps in order, their events, and the undo of one site.

    ip -> db + web -> dns         (DNS last: a name never points at a site not ready)

The database and web steps run side by side: they touch different hosts and
neither needs the other's result (the web step needs the site's address up, so
ip comes first). Their outcomes are then recorded in the order above, db
first, exactly as if one had run after the other.

Each step runs for all the sites of a batch that need it, with an intent event
before it and a done (or failed) event per site after it. When a step fails
for several sites at once it is run again for each alone (every role is
idempotent), so only the sites whose own run fails are undone; the others go
on. A site that fails is compensated alone, in reverse order, and recorded
failed with the reason (attention when something could not be undone). After
a stop, no site stays `provisioning` (settle).

The saga does not know how a step is done: it asks its `work` (the Hosting of
the apply) to run_step and, for an undo, to read what of a site is live
(live_removal). Hosting.apply and Hosting.remove use it.
"""

from typing import NoReturn

from provisioner import faults, ipam, parallel
from provisioner.errors import ConfigError, HostError, ProvisionerError
from provisioner.plan import REMOVAL_ORDER, Plan
from provisioner.progress import Progress
from provisioner.site import DesiredSite
from provisioner.sop.sla import utcnow
from provisioner.store.events import add_event
from provisioner.store.models import SiteRow

STEPS = ("ip", "db", "web", "dns")
# STEPS grouped into what runs at once; every stage's steps are recorded in STEPS order.
STAGES = (("ip",), ("db", "web"), ("dns",))


def as_error(step: str, err: BaseException) -> ProvisionerError:
    """The toolkit's own error for anything a step raised; a bug keeps its cause attached."""
    if isinstance(err, ProvisionerError):
        return err
    wrapped = HostError(f"step {step} failed: {type(err).__name__}: {err}")
    wrapped.__cause__ = err
    return wrapped


def reraise(error: ProvisionerError, err: BaseException) -> NoReturn:
    """Raise `error` (from as_error) in place of the caught `err`, chained to it when it wraps it."""
    if error is err:
        raise err
    raise error from err


def affects_every_site(err: BaseException) -> bool:
    """True when a failure is not about one site: running the step again per site would fail the same way."""
    return isinstance(err, ConfigError) or any(
        getattr(err, flag, False) for flag in ("timed_out", "unchanged", "unreachable", "connection"))


class Saga:
    """The saga of the sites of one apply (or removal), run by `work` (a Hosting)."""

    def __init__(self, work):
        self.work = work

    @property
    def store(self):
        return self.work.store

    @property
    def source(self) -> str:
        return self.work.source

    # -- records -------------------------------------------------------------------

    def event(self, sites, kind: str, step: str, **payload) -> None:
        with self.store.session() as session:
            for site in sites:
                add_event(session, site.request_id, kind, source=self.source, fqdn=site.fqdn, step=step, **payload)

    def set_state(self, site: DesiredSite, state: str, reason: str | None, event: str, **payload) -> None:
        with self.store.session() as session:
            row = session.get(SiteRow, site.fqdn)
            row.state, row.reason, row.updated_at = state, reason, utcnow()
            add_event(session, site.request_id, event, source=self.source, fqdn=site.fqdn, state=state,
                      reason=reason, **payload)

    def record_start(self, sites: list[DesiredSite], plan: Plan) -> dict[str, dict]:
        """Mark the sites with changes `provisioning`; returns each one's state before and if it went live."""
        now = utcnow()
        previous = {}
        with self.store.session() as session:
            for site in sites:
                row = session.get(SiteRow, site.fqdn)
                was = row.state if row else None
                if was == "provisioning":
                    # Left by a run that was killed: never a state to go back to.
                    was = "provisioned" if row.provisioned_at else "attention"
                previous[site.fqdn] = {"state": was,
                                       "live": bool(row and row.state != "removed" and row.provisioned_at)}
                if row is None or row.state in ("removed", "waiting"):
                    # A waiting site had nothing built: its record starts again from this plan.
                    if row is not None:
                        session.delete(row)
                        session.flush()
                    session.add(SiteRow(
                        fqdn=site.fqdn, request_id=site.request_id, office=site.office, zone=site.zone,
                        label=site.label, state="provisioning", web_host=site.web_host, db_host=site.db_host,
                        public_ip=site.public_ip, dedicated_ip=site.dedicated_ip, config=site.record(),
                        plan_checksum=plan.checksum, created_at=now, provisioned_at=None, updated_at=now))
                elif plan.for_site(site.fqdn):
                    row.state, row.updated_at, row.reason = "provisioning", now, None
                add_event(session, site.request_id, "apply_started", source=self.source, fqdn=site.fqdn,
                          checksum=plan.checksum, changes=len(plan.for_site(site.fqdn)),
                          was=previous[site.fqdn]["state"],
                          **({"note": plan.notes[site.fqdn]} if site.fqdn in plan.notes else {}))
        return previous

    def settle(self, sites: list[DesiredSite], previous: dict, cause: str) -> None:
        """A site still `provisioning` after an apply stopped goes back to its state, or to attention.

        `cause`: what stopped the apply, for the site's reason.
        """
        for site in sites:
            with self.store.session() as session:
                row = session.get(SiteRow, site.fqdn)
                if row is None or row.state != "provisioning":
                    continue
            was = previous.get(site.fqdn)
            state = was["state"] if was and was["live"] else "attention"
            self.set_state(site, state, f"the apply stopped before this site was finished ({cause}); "
                           "run it again", "site_apply_interrupted")

    # -- the steps -----------------------------------------------------------------

    def run(self, sites: list[DesiredSite], plan: Plan, passwords: dict, previous: dict,
            progress: Progress | None = None) -> dict[str, ProvisionerError]:
        """Run the steps in order (the steps of a stage side by side). A site whose step fails
        is undone and left out of the later steps; the others go on. Returns the error of
        each failed site."""
        progress = progress or Progress()
        done: dict[str, list[str]] = {s.fqdn: [] for s in sites}
        failures: dict[str, ProvisionerError] = {}
        for stage in STAGES:
            involved = {step: [s for s in sites if s.fqdn not in failures and step in plan.targets_of(s.fqdn)]
                        for step in stage}
            involved = {step: these for step, these in involved.items() if these}
            if not involved:
                continue
            for step, these in involved.items():
                progress.step([s.fqdn for s in these], step)
                self.event(these, "saga_intent", step, checksum=plan.checksum)
            outcomes = dict(zip(involved, parallel.each(
                lambda step: self.attempt(step, involved[step], plan, passwords), list(involved))))
            for step, these in involved.items():
                errors, warnings = outcomes[step]
                # A site a step before it in this stage failed is undone already, with all it had.
                these = [s for s in these if s.fqdn not in failures]
                # The live state is read once for every site to undo in this step, not once per site.
                to_undo = [s for s in these if s.fqdn in errors and not previous[s.fqdn]["live"]]
                live = self.work.live_removal(to_undo) if to_undo else None
                for site in these:
                    err = errors.get(site.fqdn)
                    if err is None:
                        self.event([site], "saga_done", step)
                        if site.zone in warnings:
                            self.event([site], "dns_notify_failed", step, warning=warnings[site.zone])
                        done[site.fqdn].append(step)
                        continue
                    failures[site.fqdn] = err
                    self.event([site], "saga_failed", step, error=str(err))
                    # What the other steps of the stage built for it is live: the undo reads and takes it.
                    ran_beside = [other for other in stage if other != step and other in involved
                                  and site.fqdn in {s.fqdn for s in involved[other]}
                                  and site.fqdn not in outcomes[other][0]]
                    self.undo(site, done[site.fqdn] + ran_beside, step, err, plan, passwords,
                              previous[site.fqdn], live)
                faults.point("after", step)
        return failures

    def attempt(self, step: str, sites: list[DesiredSite], plan: Plan, passwords: dict):
        """Run a step for its sites: (errors by site, warnings by zone).

        When the step fails for several sites at once it is run again for each
        site alone (every role is idempotent), so only the sites whose own run
        fails are undone; not when the failure is not about one site (a host or
        the API unreachable, a timeout, a refusal that changed nothing).
        """
        try:
            faults.point("before", step)
            return {}, self.work.run_step(step, sites, plan, passwords)
        except Exception as err:  # noqa: BLE001 - any failure of a step is compensated the same way
            if len(sites) == 1 or affects_every_site(err):
                # Run again per site it would fail (or hang) the same way for each: all of them failed.
                return {s.fqdn: as_error(step, err) for s in sites}, {}
        errors, warnings = {}, {}
        for site in sites:
            try:
                faults.point("before", step)
                warnings |= self.work.run_step(step, [site], plan, passwords)
            except Exception as err:  # noqa: BLE001
                errors[site.fqdn] = as_error(step, err)
        return errors, warnings

    # -- compensation --------------------------------------------------------------

    def undo(self, site: DesiredSite, done: list[str], failed_step: str, error: ProvisionerError, plan: Plan,
             passwords: dict, was: dict, live: Plan | ProvisionerError | None = None) -> None:
        """Compensate a site whose step failed, and record where it stands.

        A site that already went live is never taken apart for a failed update:
        it keeps its state, with the failure recorded. A site that never went
        live is removed from every target where the live state shows something
        of it (the records prove it is the toolkit's); when the live state
        cannot be read, from the targets this apply touched. Nothing here raises.
        `live`: the removal plan read for the sites undone in this step (read here when None).
        """
        reason = str(error)
        if was["live"]:
            self.set_state(site, was["state"], f"last update failed at step {failed_step}: {reason}",
                           "site_update_failed", step=failed_step)
            return
        left = live if live is not None else self.work.live_removal([site])
        if isinstance(left, Plan):
            steps, known = [t for t in REMOVAL_ORDER if t in left.targets_of(site.fqdn)], True
        else:  # undo what may exist rather than nothing
            touched = done + ([failed_step] if not getattr(error, "unchanged", False) else [])
            steps, known = [t for t in REMOVAL_ORDER if t in touched], False
            self.event([site], "saga_live_state_unreadable", failed_step, error=str(left))
        leftovers, undone = [], []
        for step in steps:
            try:
                self.work.run_step(step, [site], plan, passwords, state="absent")
            except Exception as err:  # noqa: BLE001 - compensation never crashes; what stays is recorded
                leftovers.append(f"{step} ({as_error(step, err)})")
                self.event([site], "saga_compensation_failed", step, error=str(as_error(step, err)))
            else:
                undone.append(step)
                self.event([site], "saga_compensated", step)
        state = "attention" if leftovers else "failed"
        # What the undo left because it was never the site's (a file where its home goes) is said, not undone.
        note = left.notes.get(site.fqdn) if isinstance(left, Plan) else None
        self.set_state(site, state, reason + (f"; not undone: {'; '.join(leftovers)}" if leftovers else ""),
                       "site_failed", step=failed_step, remaining=[x.split(" ", 1)[0] for x in leftovers],
                       **({"note": note} if note else {}))
        # The address goes back to the pool only once it is known to be down on the host.
        if site.dedicated_ip and ("ip" in undone or (known and "ip" not in steps)):
            ipam.release(self.store, site.fqdn, site.request_id, self.source)
