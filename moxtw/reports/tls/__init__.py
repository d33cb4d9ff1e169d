"""SMTP TLS reporting (RFC 8460): incoming reports.

``parse``: reports from JSON, gzip and email messages. ``received``: the received reports in
``data/tlsrpt.db``.
"""

from moxtw.reports.tls.parse import (
    DateRange,
    FailureDetails,
    Policy,
    Report,
    ReportError,
    Result,
    Summary,
    parse_message,
    parse_report,
)

__all__ = [
    "DateRange", "FailureDetails", "Policy", "Report", "ReportError", "Result", "Summary",
    "parse_message", "parse_report",
]
