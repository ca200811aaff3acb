"""The SOP a request ran under, as its submission recorded it: what letters and records cite.

`submit` records the SOP's name, title and document number in the
request_submitted event. A letter or record written later cites that, not
whatever the configuration names today (an office may have moved to a new
SOP or a new document number since). Only a request submitted before the
event carried the SOP falls back to today's configuration.
"""

from dataclasses import dataclass

from sqlalchemy import select

from provisioner.sop.model import Sop, cite, load_sop, office_sop
from provisioner.store.models import Event


@dataclass(frozen=True)
class CitedSop:
    sop: Sop  # its steps (e.g. the decision step), loaded by the recorded name
    document: str | None  # the document number recorded at submission
    text: str  # "SOP Layanan Hosting Nomor 067/28/SOP/DKISP/2022, DKISP Kota Tarakan"


def submitted(session, request_ids) -> dict[str, dict]:
    """request id -> the payload of its request_submitted event."""
    events = session.scalars(select(Event).where(Event.kind == "request_submitted",
                                                 Event.request_id.in_(set(request_ids))))
    return {e.request_id: e.payload for e in events}


def _title(config, name, recorded):
    """The recorded title; for an event written before titles were recorded, the SOP file's."""
    return recorded.get("sop_title") or load_sop(config.sop_dir, name).title


def citation(config, office_key, service, recorded=None) -> str:
    """The citation text alone (records): needs no SOP file when the event recorded the title."""
    office_name = config.office(office_key).short_name
    if recorded and recorded.get("sop"):
        return cite(_title(config, recorded["sop"], recorded), recorded.get("sop_document"), office_name)
    sop = office_sop(config, office_key, service)
    return cite(sop.title, sop.document.number, office_name)


def request_sop(config, office_key, service, recorded=None) -> CitedSop:
    """The SOP itself and its citation (letters)."""
    if recorded and recorded.get("sop"):
        sop = load_sop(config.sop_dir, recorded["sop"])
        document = recorded.get("sop_document")
    else:
        sop = office_sop(config, office_key, service)
        document = sop.document.number
    text = cite(recorded.get("sop_title") if recorded and recorded.get("sop_title") else sop.title, document,
                config.office(office_key).short_name)
    return CitedSop(sop=sop, document=document, text=text)
