"""Which approval may provision hosting: the one its own hosting SOP recorded.

`provision hosting` and the approval hook build a site only for a request
that (1) its office runs under the office's hosting SOP, (2) that SOP bound to
provisioning, (3) approved at that SOP's decision step by that step's own role
and branch, and (4) whose site was not removed since (a removed site needs a
new request: an old approval is spent). An approval recorded in another SOP
(website, consultation, application) never provisions hosting by itself.
"""

from sqlalchemy import select

from provisioner.errors import StateError
from provisioner.sop.model import APPROVE, office_sop
from provisioner.store.models import SiteRow, StepRecord

HOSTING = "hosting"
PROVISION_ACTION = "provision_site"


def check_hosting_approval(session, config, row):
    """Raise StateError unless the request `row` may be provisioned as hosting now."""
    nothing = "nothing will be touched"
    if row.decision != "approve":
        raise StateError(f"{row.id}: the SOP records no approval (state {row.state}); {nothing}")
    sop = office_sop(config, row.office, row.service)
    hosting_sop = config.office(row.office).sops.get(HOSTING)
    if row.service != HOSTING or sop.name != hosting_sop or PROVISION_ACTION not in sop.actions():
        raise StateError(f"{row.id} is a {row.service} request (SOP {sop.name}); its approval does not "
                         f"provision hosting, only an approval in office {row.office}'s hosting SOP "
                         f"({hosting_sop or 'none'}) does; {nothing}")
    step = sop.approval_step
    approved = session.scalars(select(StepRecord).where(
        StepRecord.request_id == row.id, StepRecord.step_key == step.key,
        StepRecord.by == step.actor, StepRecord.branch == APPROVE)).first()
    if approved is None:
        raise StateError(f"{row.id}: SOP {sop.name} records no approval at step {step.number} ({step.key}) "
                         f"by {step.actor}; {nothing}")
    site = session.get(SiteRow, row.fqdn)
    if site is not None and site.request_id == row.id and site.state == "removed":
        raise StateError(f"{row.id}: its site {row.fqdn} was removed; its old approval "
                         f"is spent and does not provision it again: it needs a new request; {nothing}")
    return sop
