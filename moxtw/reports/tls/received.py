"""Received SMTP TLS reports (RFC 8460), kept in ``data/tlsrpt.db`` (see
``moxtw.reports.received``).

A report received again (same ``organization-name``, ``report-id`` and domain) is stored
once.
"""

import os

from moxtw.reports.received import ReportDB as _ReportDB
from moxtw.reports.received import StoredReport
from moxtw.reports.tls import schema
from moxtw.reports.tls.parse import Report

DB_NAME = "tlsrpt.db"

__all__ = ["DB_NAME", "ReportDB", "StoredReport", "db_path"]


def db_path(data_dir):
    return os.path.join(data_dir, DB_NAME)


class ReportDB(_ReportDB):
    """The received TLS reports of a data directory (``data/tlsrpt.db``)."""

    db_name = DB_NAME
    schema = schema
    thread_name = "tlsrpt"

    def report_fields(self, report):
        return report.organization_name, report.report_id, report.date_range.start, report.date_range.end

    def load_report(self, data):
        return Report.from_json(data)
