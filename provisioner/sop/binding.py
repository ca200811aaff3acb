"""Which approval may provision hosting: the one its own hosting SOP recorded.

`provision hosting` and the approval hook build a site only for a request
that (1) its office runs under the office's hosting SOP, (2) that SOP bound to
provisioning, (3) approved at that SOP's decision step by that step's own role
and branch, and (4) whose site was not removed since (a removed site needs a
new request: an old approval is spent). An approval recorded in another SOP
(website, consultation, application) never provisions hosting by itself.
"""

from sqlalchemy import select, update

from provisioner.errors import StateError
from provisioner.sop.model import APPROVE, office_sop
from provisioner.store.models import RequestRow, SiteRow, StepRecord

HOSTING = "hosting"
PROVISION_ACTION = "provision_site"


def check_hosting_approval(session, config, row):
    """Raise StateError unless the request `row` may be provisioned as hosting now."""
    nothing = "nothing will be touched"
    if row.decision != "approve":
        raise StateError(f"{row.id}: the SOP records no approval (state {row.state}); {nothing}")
    # The service first: a request the office no longer runs (or another service's) is
    # told plainly that it does not provision hosting, not given a configuration error.
    sops = config.office(row.office).sops
    hosting_sop = sops.get(HOSTING)
    if row.service != HOSTING or hosting_sop is None:
        raise StateError(f"{row.id} is a {row.service} request (SOP {sops.get(row.service) or 'none'}); its approval does not provision hosting, "
                         f"only an approval in office {row.office}'s hosting SOP ({hosting_sop or 'none'}) "
                         f"does; {nothing}")
    sop = office_sop(config, row.office, HOSTING)
    if PROVISION_ACTION not in sop.actions():
        raise StateError(f"{row.id}: office {row.office}'s hosting SOP {sop.name} binds no {PROVISION_ACTION}; "
                         f"its approval does not provision hosting; {nothing}")
    step = sop.approval_step
    approved = session.scalars(select(StepRecord).where(
        StepRecord.request_id == row.id, StepRecord.step_key == step.key,
        StepRecord.by == step.actor, StepRecord.branch == APPROVE)).first()
    if approved is None:
        raise StateError(f"{row.id}: SOP {sop.name} records no approval at step {step.number} ({step.key}) "
                         f"by {step.actor}; {nothing}")
    site = session.get(SiteRow, row.fqdn)
    if row.closed_at is not None or (site is not None and site.request_id == row.id and site.state == "removed"):
        raise StateError(f"{row.id}: its site {row.fqdn} was removed; its old approval "
                         f"is spent and does not provision it again: it needs a new request; {nothing}")
    return sop


def close_request(session, request_id, at):
    """Mark the request spent because its site was removed (first removal wins; a rerun keeps it)."""
    session.execute(update(RequestRow).where(RequestRow.id == request_id, RequestRow.closed_at.is_(None))
                    .values(closed_at=at))
