"""DMARC aggregate reports (RFC 7489 7.2, appendix C).

``parse``: incoming reports from XML, gzip, zip and email messages. ``received``: the
received reports in ``data/dmarc.db``. ``evaluations``: the evaluations of incoming
messages in ``data/dmarceval.db``, with a suppression list, from which the reports for the
domains that ask for them (``rua``) are made. ``outgoing``: composing those reports (rows,
XML, message) and external destination verification.
"""

from moxtw.reports.dmarc.parse import (
    AuthResults,
    DateRange,
    DKIMAuthResult,
    Feedback,
    Identifiers,
    PolicyEvaluated,
    PolicyOverrideReason,
    PolicyPublished,
    Record,
    ReportError,
    ReportMetadata,
    Row,
    SPFAuthResult,
    parse_feedback,
    parse_message,
)

__all__ = [
    "AuthResults", "DateRange", "DKIMAuthResult", "Feedback", "Identifiers",
    "PolicyEvaluated", "PolicyOverrideReason", "PolicyPublished", "Record", "ReportError",
    "ReportMetadata", "Row", "SPFAuthResult", "parse_feedback", "parse_message",
]
