"""DMARC aggregate reports (RFC 7489 7.2, appendix C).

``parse``: incoming reports from XML, gzip, zip and email messages. ``db``: the received
reports in ``data/dmarc.db``. ``outgoing``: the evaluations of incoming messages in
``data/dmarceval.db`` and the aggregate reports composed from them for the domains that
ask for them (``rua``), with external destination verification and a suppression list.
"""

from moxtw.dmarcrpt.parse import (
    AuthResults, DateRange, DKIMAuthResult, Feedback, Identifiers, PolicyEvaluated,
    PolicyOverrideReason, PolicyPublished, Record, ReportError, ReportMetadata, Row,
    SPFAuthResult, parse_feedback, parse_message,
)

__all__ = [
    "AuthResults", "DateRange", "DKIMAuthResult", "Feedback", "Identifiers",
    "PolicyEvaluated", "PolicyOverrideReason", "PolicyPublished", "Record", "ReportError",
    "ReportMetadata", "Row", "SPFAuthResult", "parse_feedback", "parse_message",
]
