"""The kinds of letter numbers, and the kind a report's number is stored under.

Apart from numbering.py (which takes numbers in the store) so that checking an SOP's
reporting steps (sop/model.py) needs neither SQLAlchemy nor the store: `provision sop list`
reads the SOPs without opening the state database.
"""

import hashlib

# Letters, and the documents of the application and website SOPs (provisioner.letters.documents);
# a report is numbered per reporting step: "report-lapor_kabid".
KINDS = ("configuration", "reply", "analysis", "kak", "delegation", "handover", "website-report")
REPORT_PREFIX = "report-"
KIND_MAX = 20  # letter_numbers.kind is String(20)


def number_kind(kind: str) -> str:
    """The kind a number is stored under: `kind` itself, except a report of a step whose key is
    too long for the column (step keys may have 40 characters): report-<its first 4 letters>_<8
    hex digits of its sha256>, which fits and stays the same on every rerun."""
    if kind.startswith(REPORT_PREFIX) and len(kind) > KIND_MAX:
        key = kind[len(REPORT_PREFIX):]
        return f"{REPORT_PREFIX}{key[:4]}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return kind


def known_kind(kind: str) -> bool:
    if kind in KINDS:
        return True
    step = kind[len(REPORT_PREFIX):] if kind.startswith(REPORT_PREFIX) else ""
    return bool(step) and len(kind) <= KIND_MAX and step.replace("_", "").isalnum() and step.isascii()
